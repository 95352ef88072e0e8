"""Benchmarks: each figure is printed beside anchors measured in the same run, as ratios."""
