"""Evaluation add-ons on top of the student protocols: the full-data student (DD-Ranking's HLR), corruption
robustness and class-incremental continual learning (docs/evaluation.md)."""
