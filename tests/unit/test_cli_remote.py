"""`mmrag ingest --url`: uploads are split into requests under the server's limits."""

from __future__ import annotations

import pytest

from mmrag.cli.remote import _batches

pytestmark = pytest.mark.unit


def test_batches_stay_under_bytes_and_files() -> None:
    files = [(f"f{i}", n) for i, n in enumerate([5, 5, 5, 20, 1, 1, 1, 1])]
    out = list(_batches(files, max_bytes=12, max_files=3))
    assert [[p for p, _ in b] for b in out] == [["f0", "f1"], ["f2"], ["f3"], ["f4", "f5", "f6"], ["f7"]]
    assert [p for b in out for p, _ in b] == [p for p, _ in files]  # every file once, in order
    # a file over the byte budget still goes, alone (the server's own limit decides)
    assert all(sum(n for _, n in b) <= 12 or len(b) == 1 for b in out)
    assert list(_batches([], 10, 10)) == []
