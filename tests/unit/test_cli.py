"""The mmrag command line: help, version, config commands, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from mmrag.cli.main import app

pytestmark = pytest.mark.unit
runner = CliRunner()


def test_help_lists_every_subcommand() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for cmd in ("models", "ingest", "search", "serve", "ask", "demo", "bench", "version", "config"):
        assert cmd in res.output


def test_version_json_names_the_stack() -> None:
    res = runner.invoke(app, ["version", "--json"])
    assert res.exit_code == 0
    v = json.loads(res.stdout)
    for name in ("ray", "vllm", "colpali-engine", "lancedb", "torch"):
        assert v[name], f"{name} not installed"
    assert v["ray"].startswith("2.60")


def test_console_script_runs() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mmrag.cli.main", "version"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0 and "colpali-engine" in proc.stdout


def test_config_show_applies_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMRAG_SERVER__PORT", "9123")
    res = runner.invoke(app, ["config", "show", "--profile", "local-cpu", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["server"]["port"] == 9123


def test_bad_config_exits_2_and_names_field(tmp_path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"generator": {"max_model_len": 5}}))
    res = runner.invoke(app, ["config", "validate", str(bad)])
    assert res.exit_code == 2
    assert "generator.max_model_len" in res.output


def test_config_schema_has_descriptions() -> None:
    res = runner.invoke(app, ["config", "schema"])
    assert res.exit_code == 0
    schema = json.loads(res.stdout)
    assert schema["properties"]["store"]["description"]
