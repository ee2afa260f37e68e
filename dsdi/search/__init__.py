"""Searching a rank output: the feature query language (``query``) and the search over fused scores and clip
embeddings (``engine``)."""
