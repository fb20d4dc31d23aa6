"""Retrieval through mteb: tasks (bundled, BEIR folders, mteb's own), the thin mteb encoder, and one
corpus pass ranked for every pooling."""
