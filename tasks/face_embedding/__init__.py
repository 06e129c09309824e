"""Face embeddings (Table 14): triplet loss and distillation, LFW verification, a faiss face index."""
