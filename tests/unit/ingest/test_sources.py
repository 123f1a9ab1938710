"""Expanding what the user typed into files: symlinks may not lead out of the paths given, and every message names
a file by the path the user gave, not the link's target."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mmrag.ingest.sources import expand

pytestmark = pytest.mark.unit


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """given/ holds a real file, a link to a sibling inside, and links to a secret and a folder outside."""
    given = tmp_path / "given"
    (given / "sub").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.pdf").write_bytes(b"%PDF-1.4 secret")
    (given / "real.pdf").write_bytes(b"%PDF-1.4 real")
    os.symlink(given / "real.pdf", given / "sub" / "inside-link.pdf")
    os.symlink(outside / "secret.pdf", given / "escape.pdf")
    os.symlink(outside, given / "escape-dir")
    return {"given": given, "outside": outside, "root": tmp_path}


def test_links_out_of_a_directory_are_refused_by_name(tree) -> None:
    files, problems = expand([str(tree["given"])])
    assert {Path(f.uri).name for f in files} == {"real.pdf"}, "the inside link is the same file, once"
    assert [Path(p.uri).name for p in problems] == ["escape.pdf"]
    msg = problems[0].reason
    assert str(tree["given"] / "escape.pdf") in msg and "secret.pdf" in msg and "--follow-symlinks" in msg
    assert not any("secret" in f.uri for f in files)


def test_the_flag_lets_them_in(tree) -> None:
    files, problems = expand([str(tree["given"])], follow_symlinks=True)
    assert {Path(f.uri).name for f in files} == {"real.pdf", "secret.pdf"} and not problems
    secret = next(f for f in files if f.uri.endswith("secret.pdf"))
    assert secret.shown == str(tree["given"] / "escape.pdf"), "messages use the path as given"


def test_globs_and_named_files(tree) -> None:
    files, problems = expand([str(tree["given"] / "*.pdf")])
    assert [Path(f.uri).name for f in files] == ["real.pdf"] and len(problems) == 1
    # a named link is checked against the directory it sits in
    files, problems = expand([str(tree["given"] / "escape.pdf")])
    assert files == [] and len(problems) == 1 and "outside" in problems[0].reason
    # named, a link's root is its own directory: given/sub/inside-link.pdf leads up to given/real.pdf
    files, problems = expand([str(tree["given"] / "sub" / "inside-link.pdf")])
    assert files == [] and "outside" in problems[0].reason
    # each input is its own root: given/sub does not reach given/real.pdf even when that is named too
    files, problems = expand([str(tree["given"] / "sub"), str(tree["given"] / "real.pdf")])
    assert [Path(f.uri).name for f in files] == ["real.pdf"]
    assert len(problems) == 1 and problems[0].uri.endswith("inside-link.pdf")
    files, problems = expand([str(tree["given"])])
    assert [f.uri for f in files] == [str((tree["given"] / "real.pdf").resolve())] and len(problems) == 1


def test_a_directory_link_given_on_the_command_line_is_its_own_root(tree) -> None:
    files, problems = expand([str(tree["given"] / "escape-dir")])
    assert [Path(f.uri).name for f in files] == ["secret.pdf"] and not problems
