"""Faithful re-implementations of the seed programs, as peers for the benchmarks."""
