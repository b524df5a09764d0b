"""Benchmarks (`python build.py bench`): not collected by pytest."""
