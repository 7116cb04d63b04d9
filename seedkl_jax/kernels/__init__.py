"""The seed-divergence engine: fused vocab-chunked KL (divergence.py), sliding windows (windows.py),
and the jitted, mesh-sharded compare step over stacked seeds (compare.py)."""
