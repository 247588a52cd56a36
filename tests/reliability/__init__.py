"""Reliability tests: crashes, kills, several workers, event storms, code changes, bad input."""
