"""Frozen image embeddings: feature-extractor backbones and an on-disk embedding cache."""
