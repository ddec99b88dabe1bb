"""Sync: deliver stored resources to destinations through the outbox."""
