"""mmrag: multimodal retrieval-augmented generation served on Ray.

Importing this package is cheap and starts nothing: torch, colpali_engine, vllm and ray are
imported by the modules that use them.
"""

__version__ = "0.1.0"
