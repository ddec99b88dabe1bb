"""The store: every raw message and every resource, on SQLite (default) or PostgreSQL."""
