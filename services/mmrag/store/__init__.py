"""The LanceDB store: schema and table access."""

from mmrag.store.lance_store import FinishedDocument, LanceStore, StoreError

__all__ = ["FinishedDocument", "LanceStore", "StoreError"]
