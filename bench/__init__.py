"""Benchmarks: side-by-side ratios measured in one run, not part of the pass/fail suite."""
