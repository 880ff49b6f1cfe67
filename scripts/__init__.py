"""Benchmarks and operator scripts; a package, so shared modules (scripts.lipsync_quality) import by one name."""
