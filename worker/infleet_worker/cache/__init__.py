"""Shared Redis output / embedding cache."""
