"""``undiffuse serve`` against a real server on the loopback (uvicorn on 127.0.0.1 and a free port): the
models, the same bytes as ``undiffuse sample``/``edit``, dynamic batching that changes no byte, streamed
previews, a client that hangs up mid-stream, bad requests, a full queue, a timeout and a failing model."""

from __future__ import annotations

import base64
import io
import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

from PIL import Image  # noqa: E402
from serve_helpers import Exploding, Slow  # noqa: E402

from undiffuse.cli.main import main  # noqa: E402
from undiffuse.serve.app import create_app  # noqa: E402
from undiffuse.serve.catalog import Catalog, Served  # noqa: E402
from undiffuse.serve.client import Client  # noqa: E402
from undiffuse.serve.limits import Limits  # noqa: E402
from undiffuse.serve.server import BackgroundServer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread_module")


SLOW = {"model": "slow", "n": 1, "steps": 250}  # at least 5 s of work


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_run) -> dict:
    from undiffuse.config import apply_overrides, get_preset
    from undiffuse.training import train

    toy = tmp_path_factory.mktemp("serve") / "toy"
    cfg = apply_overrides(get_preset("toy"), ["model.hidden=32", "model.depth=1", "train.batch_size=64", "train.ckpt_every=0",
                                              "train.val_every=0", "train.sample_every=0"])  # fmt: skip
    train(cfg, toy, steps=3, progress=False)
    broken = tmp_path_factory.mktemp("serve") / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    return {"image": tiny_run, "toy": toy, "broken": broken}


def _catalog(runs, *names: str) -> Catalog:
    """The runs, and the image run again as "boom" (its network fails) and "slow" (20 ms a call)."""
    import dataclasses

    cat = Catalog([runs[name] for name in names or ("image", "toy", "broken")], device="cpu")
    model = cat.entries["run"].model
    cat.entries["boom"] = Served("boom", runs["image"], dataclasses.replace(model, denoiser=Exploding()))
    cat.entries["slow"] = Served("slow", runs["image"], dataclasses.replace(model, denoiser=Slow(model.denoiser)))
    return cat


@pytest.fixture(scope="module")
def server(runs):
    with BackgroundServer(create_app(_catalog(runs), Limits(max_n=32, queue=8, previews=4))) as url:
        yield Client(url, timeout=120)


def test_models_and_health(server):
    health = server.get("/api/health").json()
    assert health["ok"] and health["worker_alive"] and health["models"] == {"run": True, "toy": True, "broken": False, "boom": True, "slow": True}
    models = {m["name"]: m for m in server.get("/api/models").json()}
    assert models["run"]["kind"] == "image" and models["run"]["shape"] == [1, 8, 8] and models["run"]["editable"]
    assert models["toy"]["kind"] == "vector" and "npy" in models["toy"]["formats"] and not models["toy"]["editable"]
    assert not models["broken"]["ok"] and "no checkpoint" in models["broken"]["error"]
    names = [s["name"] for s in models["run"]["samplers"]]
    assert "dpmpp_2m" in names and "multinomial" not in names  # samplers of denoisers only, for a denoiser
    assert (models["run"]["default_sampler"], models["run"]["default_steps"]) == ("ddim", 50)
    ddim = next(s for s in models["run"]["samplers"] if s["name"] == "ddim")
    assert ddim["options"] == {"eta": 0.0} and ddim["grid"] == "leading"
    page = server.get("/")
    assert page.status == 200 and b'src="/static/app.js"' in page.body and b"http" not in page.body.split(b"<body>")[0]
    assert server.get("/static/app.js").status == 200 and server.get("/static/../app.py").status == 404
    assert "/api/sample" in server.get("/openapi.json").json()["paths"]
    rebound = server.connection()  # a page on another origin that rebinds its name to 127.0.0.1
    rebound.request("GET", "/api/models", headers={"Host": "attacker.example"})
    assert rebound.getresponse().status == 400


@pytest.mark.parametrize("model,args", [("run", ["--sampler", "ddim", "--eta", "0.5", "--steps", "6"]),
                                        ("run", ["--sampler", "dpmpp_2m", "--steps", "5"]),
                                        ("toy", ["--sampler", "ddpm", "--steps", "7"])])  # fmt: skip
def test_sample_answers_the_bytes_of_the_cli(server, runs, tmp_path, model, args):
    run = runs["image" if model == "run" else "toy"]
    body = {"model": model, "n": 5, "seed": 3, "sampler": args[1], "steps": int(args[-1])}
    if "--eta" in args:
        body["eta"] = 0.5
    for fmt in ("png", "npy"):
        assert main(["sample", str(run), "--n", "5", "--seed", "3", *args, "--out", str(tmp_path / f"s.{fmt}"), "--quiet"]) == 0
        answer = server.sample(**body, format=fmt)
        assert answer.status == 200, answer.body
        assert answer.body == (tmp_path / f"s.{fmt}").read_bytes()
    assert answer.headers["content-type"] == "application/octet-stream"


def _when(predicate, seconds: float = 60.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_batched_requests_answer_exactly_what_they_answer_alone(server):
    body = {"model": "run", "n": 3, "sampler": "ddpm", "steps": 10}
    alone = {seed: server.sample(**body, seed=seed) for seed in (1, 2, 3)}
    assert all(a.status == 200 and a.headers["x-undiffuse-shared-with"] == "0" for a in alone.values())
    got: dict = {}
    blocker = server.events("/api/sample/stream", json.dumps(SLOW).encode())  # busy while three requests queue up
    assert next(e for e, _ in blocker if e == "progress")
    threads = [threading.Thread(target=lambda s=s: got.setdefault(s, server.sample(**body, seed=s))) for s in (1, 2, 3)]
    for t in threads:
        t.start()
    assert _when(lambda: server.get("/api/health").json()["queued"] == 3)
    blocker.close()  # hang up: the worker drops it and takes the three together
    for t in threads:
        t.join(120)
    for seed in (1, 2, 3):
        assert got[seed].headers["x-undiffuse-shared-with"] == "2"  # one network call per step for all three
        assert got[seed].body == alone[seed].body
    assert server.get("/api/health").json()["stats"]["shared_batches"] >= 1


def test_stream_sends_progress_previews_and_the_same_result(server):
    body = {"model": "run", "n": 4, "seed": 9, "sampler": "ddim", "steps": 12}
    events = list(server.events("/api/sample/stream", json.dumps(body).encode()))
    kinds = [e for e, _ in events]
    assert kinds[0] == "queued" and kinds[-1] == "result" and kinds.count("progress") == 12
    previews = [d for e, d in events if e == "preview"]
    assert [p["step"] for p in previews] == [3, 6, 9, 12]  # previews=4: every 3 of 12 steps
    first = Image.open(io.BytesIO(base64.b64decode(previews[0]["image"].split(",", 1)[1])))
    assert first.format == "PNG" and first.size == Image.open(io.BytesIO(server.sample(**body).body)).size
    result = events[-1][1]
    assert base64.b64decode(result["data"]) == server.sample(**body).body and result["filename"] == "samples.png"


def test_a_client_that_hangs_up_mid_stream_cancels_its_work(server):
    before = server.get("/api/health").json()["stats"]
    stream = server.events("/api/sample/stream", json.dumps(SLOW).encode())
    t0 = time.monotonic()
    for event, data in stream:
        if event == "progress" and data["step"] >= 2:
            break
    stream.close()  # hang up
    assert _when(lambda: server.get("/api/health").json()["stats"]["cancelled"] > before["cancelled"], 30)
    assert _when(lambda: server.get("/api/health").json()["running_rows"] == 0, 30)
    took = time.monotonic() - t0
    ok = server.sample(model="run", n=2, steps=3)  # and the server goes on
    assert ok.status == 200 and took < 30


def test_a_client_that_hangs_up_before_its_answer_cancels_its_work(server):
    before = server.get("/api/health").json()["stats"]["cancelled"]
    conn = server.connection()
    conn.request("POST", "/api/sample", body=json.dumps(SLOW).encode(), headers={"Content-Type": "application/json"})
    assert _when(lambda: server.get("/api/health").json()["running_rows"] == 1, 30)
    conn.sock.shutdown(2)  # hang up without reading the answer
    conn.close()
    assert _when(lambda: server.get("/api/health").json()["stats"]["cancelled"] > before, 30)
    assert _when(lambda: server.get("/api/health").json()["running_rows"] == 0, 30)


def _png(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["inpaint", "sdedit"])
def test_edit_answers_the_bytes_of_the_cli(server, runs, tmp_path, mode):
    image = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 255
    (tmp_path / "in.png").write_bytes(_png(image))
    (tmp_path / "mask.png").write_bytes(_png(mask))
    fields = {"model": "run", "seed": 4, "steps": 6, "sampler": "ddim"}
    extra = ["--mask", str(tmp_path / "mask.png")] if mode == "inpaint" else ["--strength", "0.5"]
    answer = server.edit({**fields, **({} if mode == "inpaint" else {"strength": 0.5})}, _png(image),
                         _png(mask) if mode == "inpaint" else None)  # fmt: skip
    assert answer.status == 200 and answer.headers["content-type"] == "image/png", answer.body
    assert main(["edit", str(runs["image"]), "--image", str(tmp_path / "in.png"), *extra, "--seed", "4", "--steps", "6",
                 "--out", str(tmp_path / "out.png"), "--quiet"]) == 0  # fmt: skip
    assert answer.body == (tmp_path / "out.png").read_bytes()
    if mode == "inpaint":
        out = np.asarray(Image.open(io.BytesIO(answer.body)))
        assert np.array_equal(out[mask == 0], image[mask == 0])  # the kept region is the input


def _error(answer, status: int, *words: str) -> None:
    assert answer.status == status, (answer.status, answer.body)
    message = answer.json()["error"]
    assert ("—" in message or "; " in message) and "\n" not in message and all(w in message for w in words), message


def test_bad_requests_get_a_clear_json_error(server):
    _error(server.sample(model="nope"), 404, "unknown model", "run")
    _error(server.sample(model="run", n=1000), 400, "n 1000", "1 to 32")
    _error(server.sample(model="run", steps=5000), 400, "steps 5000")
    _error(server.sample(model="run", sampler="dpmpp_2m", eta=0.5), 400, "no option eta")
    _error(server.sample(model="run", format="wav"), 400, "png")
    _error(server.sample(model="run", colour="red"), 400, "colour")
    _error(server.sample(model="run", **{"class": 3}), 400, "class")
    _error(server.sample(model="broken"), 503, "did not load")
    _error(server.sample(model="run", seed=2**70), 400, "seed")
    _error(server.edit({"model": "run", "seed": 2**70}, _png(np.zeros((8, 8), np.uint8))), 400, "seed")
    _error(server.request("POST", "/api/sample", b"{not json"), 400, "bad request")
    _error(server.post_json("/api/sample", {"model": "run", "prompt": "x" * 70000}), 413, "over")
    _error(server.edit({"model": "run"}, b"\x89PNG\r\n\x1a\nnot really"), 400, "image upload")
    _error(server.edit({"model": "run"}, b""), 400, "empty")
    _error(server.edit({"model": "run"}, b"GIF89a" + bytes(40)), 400, "image upload")
    _error(server.edit({"model": "run"}, bytes(2_000_000)), 413, "over")
    _error(server.edit({"model": "toy"}, _png(np.zeros((8, 8), np.uint8))), 400, "image model")
    _error(server.edit({"model": "run", "strength": 0.5}, _png(np.zeros((8, 8), np.uint8)), _png(np.zeros((8, 8), np.uint8))),
           400, "strength")  # fmt: skip
    _error(server.edit({"model": "run"}, _png(np.zeros((8, 8), np.uint8)), _png(np.zeros((5, 3), np.uint8))), 400, "mask")
    huge = Image.new("L", (5000, 5000))
    buf = io.BytesIO()
    huge.save(buf, format="PNG", optimize=True)
    assert len(buf.getvalue()) < 1_000_000  # small file, too many pixels: refused from its header
    _error(server.edit({"model": "run"}, buf.getvalue()), 413, "pixels")
    assert server.get("/api/health").json()["ok"]


def test_a_failing_model_answers_500_and_the_server_goes_on(server):
    _error(server.sample(model="boom", n=2, steps=3), 500, "exploded", "keeps running")
    events = list(server.events("/api/sample/stream", json.dumps({"model": "boom", "n": 1, "steps": 2}).encode()))
    assert events[-1][0] == "error" and events[-1][1]["status"] == 500
    assert server.sample(model="run", n=2, steps=3).status == 200
    health = server.get("/api/health").json()
    assert health["ok"] and health["worker_alive"] and health["stats"]["failed"] >= 2


def test_full_queue_answers_429_and_slow_requests_504(runs):
    app = create_app(_catalog(runs, "image"), Limits(max_n=32, queue=2, timeout_s=3))
    with BackgroundServer(app) as url:
        c = Client(url)
        got: dict = {}
        blocker = threading.Thread(target=lambda: got.setdefault("blocker", c.sample(**SLOW)))
        blocker.start()
        assert _when(lambda: c.get("/api/health").json()["running_rows"] == 1)
        queued = [threading.Thread(target=lambda s=s: got.setdefault(s, c.sample(**SLOW, seed=s, sampler="ddpm"))) for s in (1, 2)]
        for t in queued:
            t.start()
        assert _when(lambda: c.get("/api/health").json()["queued"] == 2)
        _error(c.sample(model="run", n=1, steps=2), 429, "queue is full")
        for t in [blocker, *queued]:
            t.join(60)
        assert {got[k].status for k in ("blocker", 1, 2)} == {504}
        assert "longer than 3 s" in got["blocker"].json()["error"]
        assert _when(lambda: c.get("/api/health").json()["running_rows"] == 0, 30)  # the timed-out work was dropped
        assert c.sample(model="run", n=1, steps=2).status == 200


def test_the_command_serves_until_interrupted(runs):
    import os
    import queue
    import signal
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "undiffuse.cli.main", "serve", str(runs["image"]), str(runs["toy"]), "--port", "0", "--threads", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stderr], daemon=True).start()
    try:
        url, deadline = None, time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert proc.poll() is None, "the server exited"
                continue
            if line.startswith("serve: http://127.0.0.1:"):
                url = line.split()[1].rstrip("/")
        assert url is not None
        c = Client(url)
        assert c.get("/api/health").json()["models"] == {"run": True, "toy": True}
        assert c.sample(model="toy", n=3, steps=2, format="npy").status == 200
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_the_command_refuses_bad_arguments_in_one_line(runs, tmp_path, capsys):
    assert main(["serve", str(runs["image"]), "--port", "70000"]) == 2
    assert main(["serve", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "--port 70000" in err[0] and "no run could be loaded" in err[1]


def test_a_table_run_answers_the_csv_of_the_cli(tmp_path):
    run = tmp_path / "wine"
    assert main(["train", "--data", "table:wine", "--out", str(run), "--steps", "3", "--quiet"]) == 0
    with BackgroundServer(create_app(Catalog([run], device="cpu"))) as url:
        c = Client(url)
        m = c.get("/api/models").json()[0]
        assert m["kind"] == "table" and m["formats"] == ["csv"] and [s["name"] for s in m["samplers"]] == ["multinomial"]
        for extra, args in (({}, []), ({"class": 2, "steps": 20}, ["--class", "2", "--steps", "20"])):
            answer = c.sample(model="wine", n=5, seed=1, format="csv", **extra)
            assert answer.status == 200 and answer.headers["content-type"].startswith("text/csv"), answer.body
            assert main(["sample", str(run), "--n", "5", "--seed", "1", *args, "--out", str(tmp_path / "r.csv"), "--quiet"]) == 0
            assert answer.body == (tmp_path / "r.csv").read_bytes()
        events = list(c.events("/api/sample/stream", json.dumps({"model": "wine", "n": 3, "format": "csv"}).encode()))
        assert events[-1][0] == "result" and "preview" not in [e for e, _ in events]  # no picture of a table
        _error(c.sample(model="wine", format="png"), 400, "csv")
        _error(c.sample(model="wine", sampler="heun"), 400, "multinomial")
