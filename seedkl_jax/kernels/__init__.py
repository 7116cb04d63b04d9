"""The seed-divergence engine: fused vocab-chunked KL (divergence.py), its unigram reference
(reference.py), sliding windows (windows.py), and the jitted, mesh-sharded compare step (compare.py)."""
