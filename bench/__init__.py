"""Benchmarks for les02-flow (``make bench``); results are appended to ``bench/RESULTS.md``."""
