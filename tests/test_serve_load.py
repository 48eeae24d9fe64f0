"""The load test of ``undiffuse serve`` (benchmarks/serve_load.py), bounded and on the loopback: 32 clients at
once against the real command; every request is answered 200 or 429 (then retried), memory stays bounded, the
server stops by itself, and dynamic batching shares network calls (about 25 s on 2 cores)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_load.py"


def test_32_clients_are_answered_with_bounded_memory(tiny_run, tmp_path):
    spec = importlib.util.spec_from_file_location("serve_load", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = bench.main(["--run", str(tiny_run), "--clients", "32", "--requests", "2", "--n", "2", "--steps", "10",
                      "--queue", "8", "--out", str(tmp_path / "load.json")])  # fmt: skip
    by = {p["phase"]: p for p in out["phases"]}
    for p in out["phases"]:
        assert p["statuses"] == [200] and p["answered"] == p["clients"] * p["requests_per_client"]
        assert p["exit_code"] == 0  # stopped by itself on SIGINT
        assert p["rss_peak_mb"] < p["rss_start_mb"] + 400  # bounded: the queue and bodies are capped
    assert by["concurrent"]["retried_429"] > 0  # a queue of 8 under 32 clients refuses some, who retry
    assert by["concurrent"]["shared_batches"] > 0 and by["concurrent_unbatched"]["shared_batches"] == 0
    assert (tmp_path / "load.json").exists()
