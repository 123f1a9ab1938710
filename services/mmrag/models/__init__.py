"""Model adapters: the late-interaction encoder (:mod:`.encoder`) and the tiny offline checkpoints (:mod:`.tiny`).

Nothing heavy is imported here; torch, transformers and colpali-engine load inside the functions that use them.
"""
