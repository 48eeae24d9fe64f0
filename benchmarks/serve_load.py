"""A bounded load test of ``undiffuse serve`` on the loopback: latency, throughput, dynamic batching, memory.

    python benchmarks/serve_load.py [--run RUN_DIR] [--clients 32] [--requests 3] [--n 2] [--steps 20]
                                    [--queue 16] [--out benchmarks/results/serve_load.json]

The server is the real command (``undiffuse serve RUN --port 0 --threads 1``) in its own process; the clients
are threads of this one, each sending its requests one after another (POST /api/sample, PNG answers, all with
the same settings and their own seeds). Without ``--run`` the network is the default run's (preset ``fmnist``,
UNet 1.6 M parameters, 28×28×1) after one training step: the speed of a pass does not depend on the weights;
``--preset digits-tiny`` takes a tiny UNet on 8×8 digits instead, where a call costs mostly overhead.

Phases, each against a fresh server:
- ``sequential``: one client, ``--clients`` requests one after another (the baseline: nothing to share);
- ``concurrent``: ``--clients`` clients × ``--requests`` requests at once, dynamic batching on;
- ``concurrent_unbatched``: the same load with ``--max-batch`` = n, so no two requests share a network call.
A 429 (queue full) is counted and retried after 0.2 s, for at most 10 minutes (every loop is bounded).
Reported: p50/p95/max latency of the answered attempts and p50/p95 from the first attempt (429s included), samples/s, the server's CPU-seconds and peak resident
memory (sampled every 50 ms from /proc), the 1-minute load average before and after, 429s, shared batches.
The server is stopped with Ctrl-C (SIGINT) at the end of each phase and must exit by itself within 30 s.
"""

from __future__ import annotations

import argparse
import os
import queue
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from undiffuse.serve.client import Client

TICK = os.sysconf("SC_CLK_TCK")


def default_run(root: Path, preset: str = "fmnist") -> Path:
    """A run of ``preset`` after one training step on 256 images: ``fmnist`` (the default run's network, Fashion-MNIST)
    or ``digits-tiny`` (a tiny UNet on 8×8 digits, where the cost of a call is mostly overhead)."""
    from undiffuse.config import apply_overrides, get_preset, resolve_config
    from undiffuse.training import train

    base = resolve_config(None, None, []) if preset == "fmnist" else get_preset(preset)
    cfg = apply_overrides(base, ["data.limit=256", "train.ckpt_every=0", "train.val_every=0", "train.sample_every=0",
                                 "train.batch_size=16"])  # fmt: skip
    train(cfg, root / preset, steps=1, progress=False)
    return root / preset


class Server:
    """``undiffuse serve`` in a subprocess; ``url`` once it listens; ``stop()`` sends SIGINT and waits."""

    def __init__(self, run: Path, *args: str) -> None:
        cmd = [sys.executable, "-m", "undiffuse.cli.main", "serve", str(run), "--port", "0", "--threads", "1", *args]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in self.proc.stderr], daemon=True).start()
        deadline, self.url = time.monotonic() + 120, None
        while self.url is None and time.monotonic() < deadline and self.proc.poll() is None:
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("serve: http://"):
                self.url = line.split()[1].rstrip("/")
        if self.url is None:
            self.proc.kill()
            raise RuntimeError("the server did not start")
        self.peak_rss, self._watching = self.rss(), True
        self._watch = threading.Thread(target=self._watch_memory, daemon=True)
        self._watch.start()

    def _proc_file(self, name: str) -> str:
        return Path(f"/proc/{self.proc.pid}/{name}").read_text()

    def rss(self) -> int:
        """Resident memory in bytes."""
        line = next(ln for ln in self._proc_file("status").splitlines() if ln.startswith("VmRSS:"))
        return int(line.split()[1]) * 1024

    def cpu_s(self) -> float:
        fields = self._proc_file("stat").rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime

    def _watch_memory(self) -> None:
        while self._watching and self.proc.poll() is None:
            try:
                self.peak_rss = max(self.peak_rss, self.rss())
            except (OSError, StopIteration):
                return
            time.sleep(0.05)

    def stop(self) -> int:
        self._watching = False
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            return -9


def client(url: str, body: dict, seeds: list[int], out: list, patience_s: float = 600.0) -> None:
    """Send one request per seed, one after another; a 429 is retried after 0.2 s for at most ``patience_s``."""
    c = Client(url, timeout=600)
    for seed in seeds:
        busy, first = 0, time.perf_counter()
        while True:
            t0 = time.perf_counter()
            answer = c.sample(**body, seed=seed)
            if answer.status != 429 or t0 - first > patience_s:
                break
            busy += 1
            time.sleep(0.2)
        end = time.perf_counter()
        out.append({"status": answer.status, "latency_s": end - t0, "with_retries_s": end - first, "busy": busy,
                    "shared_with": int(answer.headers.get("x-undiffuse-shared-with", -1))})  # fmt: skip


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))] if s else float("nan")


def phase(run: Path, name: str, clients: int, requests: int, body: dict, server_args: list[str]) -> dict:
    server = Server(run, *server_args)
    try:
        c = Client(server.url)
        assert c.sample(**body, seed=10**6).status == 200  # warm-up: the first pass builds the kernels
        rss0, cpu0, load0 = server.rss(), server.cpu_s(), os.getloadavg()[0]
        out: list = []
        plan = [[1000 * k + r for r in range(requests)] for k in range(clients)]
        threads = [threading.Thread(target=client, args=(server.url, body, seeds, out)) for seeds in plan]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join(1800)
        wall = time.perf_counter() - t0
        health = c.get("/api/health").json()
        cpu = server.cpu_s() - cpu0
    finally:
        code = server.stop()
    ok = [r for r in out if r["status"] == 200]
    lat, total = [r["latency_s"] for r in ok], [r["with_retries_s"] for r in ok]
    return {"phase": name, "clients": clients, "requests_per_client": requests, "answered": len(ok),
            "statuses": sorted({r["status"] for r in out}), "retried_429": sum(r["busy"] for r in out),
            "latency_p50_s": percentile(lat, 0.5), "latency_p95_s": percentile(lat, 0.95), "latency_max_s": max(lat, default=0),
            "with_retries_p50_s": percentile(total, 0.5), "with_retries_p95_s": percentile(total, 0.95),
            "wall_s": wall, "samples_per_s": len(ok) * body["n"] / wall, "server_cpu_s": cpu,
            "cpu_s_per_sample": cpu / max(1, len(ok) * body["n"]), "rss_start_mb": rss0 / 2**20,
            "rss_peak_mb": server.peak_rss / 2**20, "shared_batches": health["stats"]["shared_batches"],
            "batches": health["stats"]["batches"], "mean_shared_with": statistics.fmean([r["shared_with"] for r in ok] or [0]),
            "load_before": load0, "load_after": os.getloadavg()[0], "exit_code": code}  # fmt: skip


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, default=None, help="a run directory (default: --preset's network after 1 step)")
    p.add_argument("--preset", default="fmnist", choices=("fmnist", "digits-tiny"), help="the network when no --run")
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--requests", type=int, default=3, help="requests per client")
    p.add_argument("--n", type=int, default=2, help="samples per request")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--sampler", default="ddim")
    p.add_argument("--queue", type=int, default=16, help="the server's queue (below --clients: some 429s)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/serve_load.json"))
    args = p.parse_args(argv)
    if not (1 <= args.clients <= 256 and 1 <= args.requests <= 100):
        p.error("--clients must be in 1..256 and --requests in 1..100 (a bounded test)")
    with tempfile.TemporaryDirectory() as tmp:
        run = args.run or default_run(Path(tmp), args.preset)
        body = {"model": run.resolve().name, "n": args.n, "steps": args.steps, "sampler": args.sampler}
        common = ["--queue", str(args.queue), "--max-n", str(args.n)]
        phases = [phase(run, "sequential", 1, args.clients, body, common),
                  phase(run, "concurrent", args.clients, args.requests, body, [*common, "--max-batch", "256"]),
                  phase(run, "concurrent_unbatched", args.clients, args.requests, body, [*common, "--max-batch", str(args.n)])]
    by = {ph["phase"]: ph for ph in phases}
    result = {"settings": {**vars(args), "run": str(args.run or f"{args.preset} network, 1 step"), "out": str(args.out)},
              "machine": {"cpus": os.cpu_count(), "torch_threads_server": 1}, "phases": phases,
              "throughput_vs_sequential": by["concurrent"]["samples_per_s"] / by["sequential"]["samples_per_s"],
              "dynamic_batching_speedup": by["concurrent"]["samples_per_s"] / by["concurrent_unbatched"]["samples_per_s"]}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    from undiffuse.io import write_json

    write_json(args.out, result)
    for ph in phases:
        print(f"{ph['phase']:>21}: {ph['answered']} answered {ph['statuses']}, p50 {ph['latency_p50_s']:.2f} s, p95 "
              f"{ph['latency_p95_s']:.2f} s, {ph['samples_per_s']:.1f} samples/s, {ph['cpu_s_per_sample']:.3f} CPU-s/sample, "
              f"peak RSS {ph['rss_peak_mb']:.0f} MB, 429s retried {ph['retried_429']}, load {ph['load_before']:.1f}")  # fmt: skip
    print(f"throughput vs sequential ×{result['throughput_vs_sequential']:.2f}; dynamic batching ×{result['dynamic_batching_speedup']:.2f}")
    return result


if __name__ == "__main__":
    main()
