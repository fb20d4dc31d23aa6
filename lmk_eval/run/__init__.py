"""A run: the sweep's checkpoints and cells planned, checked before any work, computed by an
executor, written by one sink; lmk-eval plan's costs."""
