"""Few-step students by distillation (issue 15): quality at 1, 2 and 4 steps beside the teacher, and the cost.

    python benchmarks/distill.py toy    --teacher RUNS/toy25 --work DIR [--steps 3000] [--teacher-solver none --start-steps 64]
    python benchmarks/distill.py fmnist --teacher RUNS/fmnist --work DIR [--steps 600] [--n 2000] [--target-steps 4]
    python benchmarks/distill.py fmnist --table      # the markdown table of the saved results

For each method (``progressive``, ``consistency``) one student is distilled from the teacher with
:func:`undiffuse.training.distill.distill` on one thread, timed in CPU-seconds (``time.process_time``):

- progressive: one run with ``--target-steps K`` (default 1) and ``--start-steps S`` (default: the library's,
  2K — one round — with accurate-teacher targets, the default, or 64 with ``--teacher-solver none``; rounds
  S/2, S/4, …, K, each ``steps/rounds`` optimizer steps); its checkpoints at the end of the 4-, 2- and 1-step
  rounds are the 4-, 2- and 1-step students (DDIM on the student grid); the CPU cost of a row is the cost up to
  that round (with accurate-teacher targets the whole run's: its teacher pool, made first, serves every round).
  The rows "progressive student" / "…, earlier recipe" were made with ``--teacher-solver none --start-steps 64``
  (toy) and ``--teacher-solver none --start-steps 16`` (fmnist);
- consistency: one run; the same student samples with 1, 2 and 4 steps of multistep consistency sampling.

Quality: the 25-Gaussian toy — modes covered and the high-quality share (within 3σ of a mode) of 2,500
samples (the VEEGAN/PacGAN protocol, :mod:`undiffuse.evaluation.modes`); Fashion-MNIST — the classifier
Fréchet distance of ``undiffuse eval`` (:func:`undiffuse.evaluation.report.classifier_fd_to`, test split) of
``--n`` samples. Teacher rows: DDIM 50 steps, unipc and dpmpp_2m at 10 and 5 steps (default grids), and unipc
at the students' 4, 2 and 1 steps. Methods and the teacher may be measured in separate processes (``--methods
none``, ``--no-teacher``): their rows merge. The teacher's training cost: its log.jsonl (wall seconds of the logged steps)
and, comparable to the distillation's CPU-seconds, 10 of its training steps timed on one thread, scaled to its
step count. Results merge into benchmarks/results/distill.json (a key per dataset); the Fashion-MNIST
teacher rows also go to benchmarks/results/default_run_fd.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STEPS = (1, 2, 4)


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _scorer(dataset: str, n: int):
    """x ↦ metrics of the samples: toy mode coverage, or the classifier FD of images."""
    if dataset == "toy":
        from undiffuse.data.toys import toy_modes
        from undiffuse.evaluation.modes import mode_coverage

        means, std = toy_modes("25gaussians")

        def toy(x):
            r = mode_coverage(x, means, std)
            return {"modes": r["modes_covered"], "high_quality_share": round(r["high_quality_share"], 4)}

        return toy
    from undiffuse.evaluation.report import classifier_fd_to

    fd = classifier_fd_to("fashion-mnist", "test")
    return lambda x: {"classifier_fd": round(float(fd(x)), 3)}


def _row(model, score, n: int, sampler=None, steps=None, **extra) -> dict:
    """Sample n from ``model`` (its default grid for its own sampler) and score; CPU-seconds of the sampling."""
    import undiffuse.api as api

    info: dict = {}
    c0 = time.process_time()
    x = api.sample(model, n, seed=0, sampler=sampler, steps=steps, batch_size=500, info=info)
    cpu = time.process_time() - c0
    row = {"sampler": info["sampler"], "steps": info["steps"], "grid": info["grid"], "nfe": info["nfe"], "n": n,
           "sampling_cpu_s": round(cpu, 2), **extra}  # fmt: skip
    row.update(score(x))
    print(json.dumps(row), flush=True)
    return row


TEACHER_ROWS = "ddim:50,unipc:10,unipc:5,unipc:4,unipc:2,unipc:1,dpmpp_2m:10,dpmpp_2m:5"


def teacher_rows(teacher: str, score, n: int, wanted: str, dataset: str) -> None:
    """The teacher's rows ``sampler:steps,…`` (each on its default grid), each merged into the results as soon as
    it is measured; rows already there are kept, not measured again (so the teacher's rows may be split over
    processes, and a stopped run continues)."""
    import undiffuse.api as api

    model = api.load(teacher)
    have = {(r["sampler"], r["steps"]) for r in _load_json(RESULTS / "distill.json").get(dataset, {}).get("teacher_rows", [])}
    for item in wanted.split(","):
        sampler, steps = item.split(":")
        if (sampler, int(steps)) not in have:
            _save(dataset, {"teacher": teacher, "n": n}, teacher_row=_row(model, score, n, sampler, int(steps), who="teacher"))


def _save(dataset: str, result: dict, teacher_row=None, methods=(), rows=()) -> None:
    """Merge into benchmarks/results/distill.json: ``result``'s keys, a teacher row (by sampler and steps), the
    student rows of ``methods``; the Fashion-MNIST teacher's DDIM-50 and 10-step rows also go to
    default_run_fd.json."""
    from undiffuse.io import write_json

    allr = _load_json(RESULTS / "distill.json")
    old = allr.get(dataset, {})
    teach = [r for r in old.get("teacher_rows", [])
             if teacher_row is None or (r["sampler"], r["steps"]) != (teacher_row["sampler"], teacher_row["steps"])]
    teach += [teacher_row] if teacher_row is not None else []
    students = [r for r in old.get("student_rows", []) if r["who"] not in methods] + list(rows)
    allr[dataset] = {**old, **result, "teacher_rows": teach, "student_rows": students}
    write_json(RESULTS / "distill.json", allr)
    if dataset == "fmnist":
        keys = ("sampler", "steps", "grid", "n", "classifier_fd", "sampling_cpu_s")
        fd = [{k: r[k] for k in keys} for r in teach if r["steps"] in (50, 10)]
        write_json(RESULTS / "default_run_fd.json", {"teacher": allr[dataset].get("teacher"), "threads": 1, "rows": fd,
                                                     "note": "classifier FD (undiffuse eval), test split, seed 0"})


def _distill_timed(teacher: str, out: Path, method: str, steps: int, start, target: int, solver, overrides: list[str]) -> float:
    from undiffuse.training.distill import distill

    c0 = time.process_time()
    kw = dict(target_steps=target, start_steps=start, teacher_solver=solver) if method == "progressive" else dict(target_steps=1)
    distill(teacher, out, method, steps=steps, overrides=overrides, progress=False, **kw)
    return time.process_time() - c0


def student_rows(teacher: str, work: Path, method: str, steps: int, start, target: int, solver, score, n: int,
                 overrides: list[str], who: str) -> list[dict]:  # fmt: skip
    import undiffuse.api as api
    from undiffuse.runs import saved_config
    from undiffuse.training.distill import progressive_rounds

    out = work / method
    cpu = _distill_timed(teacher, out, method, steps, start, target, solver, overrides)
    d = saved_config(out).distill
    rounds, round_steps = progressive_rounds(d.start_steps, d.target_steps), d.round_steps
    rows = []
    for k in STEPS[::-1]:
        if method == "progressive" and k not in rounds:
            continue
        if method == "progressive":  # the checkpoint at the end of the k-step round
            rnd = rounds.index(k) + 1
            step = rnd * round_steps
            pooled = bool(saved_config(out).distill.teacher_solver)  # the pool (made first) serves every round
            model, cost = api.load(out, step), cpu if pooled else cpu * rnd / len(rounds)
        else:
            model, cost = api.load(out), cpu
        rows.append(_row(model, score, n, None, k, who=who, distill_step=model.step,
                         distill_cpu_s=round(cost, 1)))  # fmt: skip
    return rows


def teacher_cost(teacher: str) -> dict:
    """The teacher's training cost: wall seconds of its logged steps (log.jsonl), and the CPU-seconds of 10 of
    its training steps on one thread (after 2 warm-up steps) scaled to its step count (the distillation's unit)."""
    import shutil
    from dataclasses import replace

    import undiffuse.api as api
    from undiffuse.training import train

    log = [json.loads(line) for line in (Path(teacher) / "log.jsonl").read_text().splitlines() if line.strip()]
    wall, prev = 0.0, 0
    for r in (r for r in log if "img_per_s" in r):
        wall += (r["examples"] - prev) / max(r["img_per_s"], 1e-9)
        prev = r["examples"]
    cfg = api.load(teacher).config
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"distill-bench-probe-{os.getpid()}"
    quiet = replace(cfg.train, steps=12, sample_every=0, val_every=0, ckpt_every=0, log_every=0)
    marks: dict = {}
    train(replace(cfg, train=quiet), probe, progress=False, on_step=lambda s, _: marks.setdefault(s, time.process_time()))
    shutil.rmtree(probe, ignore_errors=True)
    per_step = (marks[12] - marks[2]) / 10
    return {"steps": cfg.train.steps, "batch": cfg.train.batch_size, "log_wall_s": round(wall, 1),
            "cpu_s_per_step_1_thread": round(per_step, 4), "cpu_s_1_thread": round(per_step * cfg.train.steps, 1)}


def markdown(dataset: str) -> str:
    """The steps-vs-quality table of one dataset from benchmarks/results/distill.json."""
    r = _load_json(RESULTS / "distill.json")[dataset]
    toy = dataset == "toy"
    head = "| model | sampler | steps (NFE) | " + ("modes | high-quality share |" if toy else "classifier FD |")
    lines = [head + " sampling CPU-s | distillation CPU-s |", "|" + "---|" * (7 if toy else 6)]
    teacher = sorted(r.get("teacher_rows", []), key=lambda t: (t["sampler"] != "ddim", t["sampler"], -t["steps"]))
    for row in teacher + r.get("student_rows", []):
        q = f"{row['modes']} | {100 * row['high_quality_share']:.1f} %" if toy else f"{row['classifier_fd']:.2f}"
        cost = f"{row['distill_cpu_s']:.0f}" if "distill_cpu_s" in row else "–"
        lines.append(f"| {row['who']} | {row['sampler']} ({row['grid']}) | {row['steps']} ({row['nfe']}) | {q} | "
                     f"{row['sampling_cpu_s']:.1f} | {cost} |")  # fmt: skip
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dataset", choices=("toy", "fmnist"))
    ap.add_argument("--teacher", default=None)
    ap.add_argument("--work", default=None, help="where the student runs go (must not hold them yet)")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the saved results and stop")
    ap.add_argument("--steps", type=int, default=None, help="distillation steps per method (toy 3000, fmnist 600)")
    ap.add_argument("--n", type=int, default=None, help="samples per row (toy 2500, fmnist 2000)")
    ap.add_argument("--methods", default="progressive,consistency", help="comma-separated; 'none' for none")
    ap.add_argument("--start-steps", type=int, default=None, help="progressive: the teacher steps of round 1 (default: "
                    "the library's — 2 × target with a teacher solver, else 64)")
    ap.add_argument("--target-steps", type=int, default=1, help="progressive: the last round's steps (default 1)")
    ap.add_argument("--teacher-solver", default=None, help="progressive: the accurate-teacher solver (default: the "
                    "library's, unipc); 'none' for two DDIM steps of each round's teacher")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="student config overrides")
    ap.add_argument("--label", default=None, help="the rows' model label (default 'METHOD student'); rows of other "
                    "labels are kept, those of this one replaced")
    ap.add_argument("--no-teacher", action="store_true", help="skip the teacher rows and cost")
    ap.add_argument("--teacher-rows", default=TEACHER_ROWS, help=f"sampler:steps,… (default {TEACHER_ROWS})")
    ap.add_argument("--no-cost", action="store_true", help="skip measuring the teacher's training cost")
    args = ap.parse_args(argv)
    if args.table:
        print(markdown(args.dataset))
        return 0
    if args.teacher is None or args.work is None:
        ap.error("--teacher and --work are required to measure")
    import torch

    from undiffuse.runs import saved_config

    torch.set_num_threads(1)
    toy = args.dataset == "toy"
    n = args.n or (2500 if toy else 2000)
    steps = args.steps or (3000 if toy else 600)
    score = _scorer(args.dataset, n)
    result = {"dataset": args.dataset, "teacher": args.teacher, "n": n, "threads": 1}
    if not args.no_teacher:
        teacher_rows(args.teacher, score, n, args.teacher_rows, args.dataset)
        if not args.no_cost:
            _save(args.dataset, {**result, "teacher_training": teacher_cost(args.teacher)})
    methods = [m for m in args.methods.split(",") if m and m != "none"]
    for method in methods:
        load0 = os.getloadavg()[0]
        who = args.label or f"{method} student"
        solver = "" if args.teacher_solver == "none" else args.teacher_solver
        rows = student_rows(args.teacher, Path(args.work), method, steps, args.start_steps, args.target_steps, solver,
                            score, n, args.overrides, who)  # fmt: skip
        d = saved_config(Path(args.work) / method).distill
        settings = {"steps": steps, "overrides": args.overrides, "load_avg": [load0, os.getloadavg()[0]],
                    **({"start_steps": d.start_steps, "target_steps": d.target_steps, "teacher_solver": d.teacher_solver}
                       if method == "progressive" else {})}  # fmt: skip
        key = f"{who} settings" if args.label else f"{method}_settings"
        _save(args.dataset, {**result, key: settings}, methods=(who,), rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
