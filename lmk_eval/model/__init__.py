"""Models and their inputs: loading and fingerprinting, tokenisation, token-budget batches, the
encoder that shares one forward pass among poolings."""
