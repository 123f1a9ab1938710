"""Per-collection calibration of the search channels' fusion weights and of reranking.

After ingestion a collection measures its own channels (visual, BM25, dense text) and reranker on probe queries
drawn from its own items (:mod:`mmrag.calibration.probes`), picks the weights and fusion method that rank those
best (:mod:`mmrag.calibration.fit`), and stores the result with the collection (the store's ``calibration``
table). Searches then use it (:mod:`mmrag.calibration.policy`) unless the config or the request names weights.
"""

from mmrag.calibration.run import calibrate, fingerprint, maybe_calibrate, needs_calibration

__all__ = ["calibrate", "fingerprint", "maybe_calibrate", "needs_calibration"]
