"""Where the token stage's flat arenas live: in RAM, or in a memory-mapped file on local disk (:class:`Arena`).

At a million pages the int8 tokens are ~11.5 GB (90 tokens x 128 bytes + a 4-byte scale each), past what one node's
RAM should hold. On disk, they are a sparse file mapped into the process: a search touches only its candidates'
pages, the kernel keeps the hot ones in its page cache and drops cold ones under pressure, and the process' own
(anonymous) memory holds only the first stage, offsets and metadata. The file is unlinked as soon as it is mapped, so
it goes away with the last snapshot that maps it, crash or not, and two replicas never share or clobber one.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np


class Arena:
    """Allocates the arenas of token vectors and scales: ``np.empty`` in RAM, or an unlinked ``np.memmap`` file in
    ``directory`` (None: the system's temporary directory)."""

    def __init__(self, tier: str = "ram", directory: str | None = None) -> None:
        if tier not in ("ram", "disk"):
            raise ValueError(f"token_tier must be 'ram' or 'disk', got {tier!r}")
        self.tier = tier
        self.directory = directory

    def __call__(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        if self.tier == "ram" or int(np.prod(shape)) == 0:
            return np.empty(shape, dtype)
        if self.directory is not None:
            os.makedirs(self.directory, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="mmrag-tokens-", suffix=".bin", dir=self.directory)
        try:
            # a sparse file: the capacity's unwritten tail takes no disk, as np.empty's untouched pages take no RAM
            os.ftruncate(fd, int(np.prod(shape)) * np.dtype(dtype).itemsize)
            arr = np.memmap(path, dtype=dtype, mode="r+", shape=shape)
        finally:
            os.close(fd)
            os.unlink(path)  # the mapping keeps the file's pages; the disk space is freed when it is unmapped
        return arr


#: The default: everything in RAM.
RAM = Arena()


def on_disk(arr: np.ndarray | None) -> bool:
    """True when ``arr`` is (a view of) a memory-mapped arena."""
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = arr.base if isinstance(arr.base, np.ndarray) else None
    return False


__all__ = ["RAM", "Arena", "on_disk"]
