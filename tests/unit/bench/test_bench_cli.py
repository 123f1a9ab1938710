"""``mmrag bench``: help, a short real run, clear errors, the self-test, and the benchmark wrappers."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmrag.cli.main import app

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_bench_help_lists_the_commands() -> None:
    res = runner.invoke(app, ["bench", "--help"])
    assert res.exit_code == 0
    for cmd in ("load", "selftest", "ingest", "retrieval"):
        assert cmd in res.output
    res = runner.invoke(app, ["bench", "load", "--help"])
    assert res.exit_code == 0
    for opt in ("--url", "--endpoint", "--concurrency", "--rate", "--duration", "--requests", "--slo", "--queries"):
        assert opt in res.output


def test_bench_load_short_run(trivial_server, tmp_path) -> None:
    srv = trivial_server(tokens=3)
    out = tmp_path / "run"
    args = ["bench", "load", "--url", srv.url, "--endpoint", "chat", "--concurrency", "1,2", "--requests", "6"]
    args += ["--warmup", "0", "--slo", "ttft_ms=1000,latency_ms=5000", "--out", str(out), "--no-plots", "--json"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert [r["label"] for r in summary["runs"]] == ["c=1", "c=2"]
    assert all(r["ok"] == 6 and r["goodput_rps"] > 0 for r in summary["runs"])
    assert summary["command"] and (out / "summary.md").is_file()
    assert len((out / "records.jsonl").read_text().splitlines()) == 12


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--concurrency", "1", "--rate", "2"], "not both"),
        (["--concurrency", "one"], "comma-separated numbers"),
        (["--slo", "p99=3"], "bad SLO"),
        (["--endpoint", "search", "--slo", "ttft_ms=3"], "streaming endpoint"),
        (["--endpoint", "embed"], "search, answer or chat"),
        (["--extra-body", "[1]"], "JSON object"),
    ],
)
def test_bench_load_bad_arguments_exit_2(extra, match, tmp_path) -> None:
    res = runner.invoke(app, ["bench", "load", "--url", "http://127.0.0.1:9", "--out", str(tmp_path), *extra])
    assert res.exit_code == 2 and match in " ".join(res.output.split()), res.output


def test_selftest_runs_against_its_subprocess_server(tmp_path) -> None:
    from mmrag.bench.selftest import selftest

    result = selftest(seconds=0.3, warmup_s=0.1, concurrency=4, rate=200, clients=["aiohttp"], endpoints=["chat"],
                      out=tmp_path)  # fmt: skip
    assert [r["level"] for r in result["runs"]] == ["c=4", "rate=200/s"]
    for r in result["runs"]:
        assert r["ok"] == r["requests"] > 0 and r["client_ceiling_rps"] > 0
        assert r["server_cpu_ms_per_request"] is not None
    assert result["max_rps"]["throughput_rps"] > 0
    assert (tmp_path / "summary.md").read_text().startswith("# Load harness self-test")


def test_benchmark_wrappers_pass_arguments_through(monkeypatch) -> None:
    seen: list[list[str]] = []
    fake = types.ModuleType("benchmarks.retrieval")
    fake.main = lambda argv: seen.append(argv) or 0  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "benchmarks.retrieval", fake)
    res = runner.invoke(app, ["bench", "retrieval", "--sizes", "1000", "--help"])
    assert res.exit_code == 0 and seen == [["--sizes", "1000", "--help"]]


def test_benchmark_wrappers_say_when_benchmarks_are_not_importable(monkeypatch, tmp_path) -> None:
    # as from a wheel install: no sys.path entry holds benchmarks/, and the current directory is not a checkout
    keep = [p for p in sys.path if not (Path(p or ".").resolve() / "benchmarks" / "__init__.py").is_file()]
    monkeypatch.setattr(sys, "path", keep)
    monkeypatch.chdir(tmp_path)
    for name in [m for m in sys.modules if m == "benchmarks" or m.startswith("benchmarks.")]:
        monkeypatch.delitem(sys.modules, name)
    res = runner.invoke(app, ["bench", "ingest", "--only", "stages"])
    assert res.exit_code == 2
    assert "root of an mmrag checkout" in " ".join(res.output.split())


def test_bench_compare_puts_runs_side_by_side(trivial_server, tmp_path) -> None:
    srv = trivial_server()
    for name in ("r1", "r2"):
        args = ["bench", "load", "--url", srv.url, "-c", "1,2", "-n", "4", "--warmup", "0", "--no-plots"]
        assert runner.invoke(app, [*args, "--out", str(tmp_path / name)]).exit_code == 0
    runs = [str(tmp_path / "r1"), str(tmp_path / "r2" / "summary.json")]
    labels = ["--label", "1 replica", "--label", "2 replicas"]
    res = runner.invoke(app, ["bench", "compare", *runs, "--out", str(tmp_path / "cmp"), *labels])
    assert res.exit_code == 0, res.output
    md = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| 1 replica | c=1 |" in md and "| 2 replicas | c=2 |" in md
    assert (tmp_path / "cmp" / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = runner.invoke(app, ["bench", "compare", str(tmp_path / "nothing"), "--out", str(tmp_path / "cmp2")])
    assert res.exit_code == 2 and "does not exist" in " ".join(res.output.split())  # the console may wrap it
