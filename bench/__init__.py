"""Benchmarks: throughput figures, not tests. Each prints figures and ends with one JSON line."""
