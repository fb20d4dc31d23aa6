"""Pooling: the pure tensor functions, the one registry of poolings, and the poolers with weights."""
