"""Thin @hydra.main entry points (console scripts) around the plain ``run(cfg)`` functions."""
