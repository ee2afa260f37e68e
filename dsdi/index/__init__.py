"""The score index: per-clip, per-model frame scores stored in SQLite (and shards), resumable."""
