"""Matched fine-tuning: one checkpoint per (pooling, seed) from the same base, data and steps."""
