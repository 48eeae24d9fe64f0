"""``undiffuse distill``: a few-step student run from a trained diffusion run (progressive or consistency)."""

from __future__ import annotations

import argparse

from undiffuse.cli.common import add_device, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "distill", help="distil a trained run into a 1–4 step student run",
        description="Distil TEACHER (a diffusion run) into STUDENT, an ordinary run directory that `undiffuse sample`, "
        "`eval` and `distill --resume` take: progressive distillation (Salimans & Ho 2022; the student samples with "
        "DDIM on its own grid) or consistency distillation (Song et al. 2023 with iCT's loss; multistep consistency "
        "sampling). The student's config records its sampler and steps, so `undiffuse sample STUDENT` uses them.",
    )  # fmt: skip
    p.add_argument("teacher", metavar="TEACHER", nargs="?", default=None, help="the teacher run directory (not with --resume)")
    p.add_argument("--out", required=True, metavar="STUDENT", help="the student run directory (new or empty unless --resume)")
    p.add_argument("--method", choices=("progressive", "consistency"), default=None, help="distillation method")
    p.add_argument("--target-steps", type=positive_int, default=4, help="the student's sampling steps (default 4)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="optimizer steps in all (default 500 for progressive on the teacher pool — in one round "
                   "with the lr cosine-decayed over them —, else 600; progressive: split evenly over its rounds)")
    p.add_argument("--start-steps", type=positive_int, default=None,
                   help="progressive: the teacher steps that the first round halves (target × a power of 2; default "
                   "2 × target — one round — with a teacher solver, 64 with --teacher-solver none)")
    p.add_argument("--teacher-solver", default=None, metavar="SAMPLER",
                   help="progressive: learn the teacher's own ODE solution by SAMPLER (default unipc) over "
                   "distill.teacher_steps steps, precomputed for distill.pool noises; 'none' for Salimans & Ho's "
                   "targets, two DDIM steps of the previous round's student (docs/distill.md)")
    p.add_argument("--checkpoint", default=None, help="the teacher's checkpoint (step number; default: the latest)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override the student's config, e.g. --set train.lr=2e-4 --set train.batch_size=128")
    p.add_argument("--resume", action="store_true", help="continue the student run STUDENT from its latest checkpoint")
    add_device(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from undiffuse.errors import UserError
    from undiffuse.training.distill import distill

    if args.resume and (args.teacher or args.method or args.overrides or args.teacher_solver):
        raise UserError("--resume continues STUDENT with its saved teacher, method and settings — drop TEACHER, "
                        "--method and --set")  # fmt: skip
    solver = "" if args.teacher_solver == "none" else args.teacher_solver
    checkpoint = int(args.checkpoint) if args.checkpoint and args.checkpoint.isdigit() else args.checkpoint
    s = distill(args.teacher, args.out, args.method, args.target_steps, args.steps, args.resume, args.start_steps,
                args.overrides, checkpoint, args.device, progress=not args.quiet, teacher_solver=solver)  # fmt: skip
    if s.interrupted:
        print(f"interrupted at step {s.step}; checkpoint saved: {s.checkpoint} — continue with --resume")
        return 130
    print(f"distilled {s.start_step} → {s.step} steps in {s.seconds:.0f} s; last-step loss "
          f"{s.loss if s.loss is None else round(s.loss, 6)}; student {args.out} (undiffuse sample {args.out} …)")
    return 0
