"""Benchmarks: each prints its figures, as ratios to a baseline measured in the same run where
one exists, and writes them with ``--json PATH``."""
