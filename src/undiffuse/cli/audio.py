"""The audio branch of ``undiffuse eval``: the spoken-digit protocol (:mod:`undiffuse.evaluation.audio`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from undiffuse.io import write_json, write_text

__all__ = ["eval_audio"]


def eval_audio(args: argparse.Namespace, run_dir: Path) -> int:
    """``undiffuse eval RUN`` for an audio run (diffusion, or an unconditional GAN/VAE baseline): digit accuracy
    and classifier FD per guidance scale, the predicted digits' coverage."""
    from undiffuse.errors import UserError
    from undiffuse.evaluation.audio import audio_markdown, evaluate_audio_run

    n = 200 if args.n is None else args.n
    try:
        report = evaluate_audio_run(run_dir, n, args.seed, args.guidance, args.sampler,
                                    args.steps, args.device)  # fmt: skip
    except ValueError as e:
        raise UserError(f"{e} — evaluate a spoken-digits run") from None
    prefix = Path(args.out or run_dir / "eval")
    write_json(prefix.with_suffix(".json"), report)
    write_text(prefix.with_suffix(".md"), audio_markdown(report))
    print(audio_markdown(report))
    return 0
