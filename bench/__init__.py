"""Opie's benchmark: `make bench` (or `python -m bench [--quick]`). Not a test."""
