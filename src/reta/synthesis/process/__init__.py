"""Matching the training process: gradient matching (DC, DSA) and trajectory matching (MTT); docs/methods.md."""
