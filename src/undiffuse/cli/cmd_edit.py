"""``undiffuse edit``: edit an image with a trained run — inpainting, SDEdit image-to-image, DDIM
inversion — on top of :mod:`undiffuse.editing`."""

from __future__ import annotations

import argparse
import math

from undiffuse.cli.common import add_device, positive_int


def add_parser(sub) -> None:
    p = sub.add_parser(
        "edit", help="inpaint, SDEdit or invert an image with a trained run",
        description="Edit IN.png with RUN_DIR's model (resized to the model's size). With --mask (white = generate, "
        "black = keep): inpainting, the kept region stays equal to the input (RePaint resampling with --resample). "
        "Without: SDEdit image-to-image at --strength (0 returns the input, 1 samples afresh). --invert: DDIM "
        "inversion then DDIM reconstruction, reporting the reconstruction error.",
    )  # fmt: skip
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    p.add_argument("--image", default=None, help="input image (PNG/JPEG)")
    p.add_argument("--text", default=None, help='text runs: a template whose "_" characters are filled, e.g. '
                   '"In the beginning ____ created the heaven" (out: .txt or .jsonl)')
    p.add_argument("--table", default=None, help="a CSV with the run's columns whose empty cells are imputed (table runs)")
    p.add_argument("--mask", default=None, help="mask image of the input's (or the model's) size: white = generate, black = keep")
    p.add_argument("--strength", type=float, default=None, help="SDEdit strength in [0, 1] (default 0.6; not with --mask/--invert)")
    p.add_argument("--resample", type=positive_int, default=1, help="RePaint resampling: R passes per jump (1: plain replacement)")
    p.add_argument("--jump", type=positive_int, default=1, help="RePaint jump length in grid steps")
    p.add_argument("--invert", action="store_true", help="DDIM inversion + reconstruction; prints the error")
    p.add_argument("--sampler", default="ddim", help="ddim, ddpm, euler, heun, dpmpp_2m, … (inpainting and SDEdit)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="steps of the full grid (default 50; table and text runs: their own default)")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM η in [0, 1]")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise draws")
    p.add_argument("--class", dest="class_label", type=int, default=None, help="class label (class-conditional runs)")
    p.add_argument("--prompt", default=None, help="text prompt (text-conditional runs)")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale w")
    p.add_argument("--checkpoint", default=None, help="a step number or checkpoint directory (default: the latest)")
    p.add_argument("--raw", action="store_true", help="use the raw weights instead of the EMA weights")
    p.add_argument("--out", required=True, help="output image (.png or .jpg)")
    add_device(p)
    p.set_defaults(func=run)


def _read(path: str, mode: str):
    from pathlib import Path

    from undiffuse.data.images import open_image
    from undiffuse.errors import UserError

    if not Path(path).is_file():
        raise UserError(f"{path}: no such image — check the path")
    try:
        return open_image(Path(path), mode)
    except Exception as e:  # DataError: not an image
        raise UserError(f"cannot read {path} as an image — give a PNG or JPEG") from e


def load_input(path: str, shape) -> tuple:
    """(image [1, C, H, W] in [-1, 1] at the model's size and full bit depth, the file's own (width, height))."""
    from pathlib import Path

    from undiffuse.data.images import read_image
    from undiffuse.errors import UserError

    c, h, _ = shape
    if not Path(path).is_file():
        raise UserError(f"{path}: no such image — check the path")
    return read_image(path, c, h)


def load_mask(path: str, image_size: tuple, shape):
    """Mask [1, 1, H, W] with 1 = generate (white), 0 = keep (black); it must have the input image's size
    or the model's."""
    return mask_from_image(_read(path, "L"), image_size, shape, path)


def mask_from_image(img, image_size: tuple, shape, name: str = "mask"):
    """:func:`load_mask` of a grey PIL image already in memory (the server's uploads)."""
    import numpy as np
    import torch

    from undiffuse.errors import UserError

    _, h, w = shape
    if img.size not in (image_size, (w, h)):
        raise UserError(f"mask {name} is {img.size[0]}×{img.size[1]} but the image is {image_size[0]}×{image_size[1]} "
                        f"(model {w}×{h}) — give a mask of the image's size")  # fmt: skip
    if img.size != (w, h):
        from undiffuse.data.images import resize_crop

        img = resize_crop(img, h).point(lambda v: 255 if v >= 128 else 0)
    return torch.from_numpy((np.asarray(img) >= 128).astype(np.float32))[None, None]


def save_image(x, path: str) -> None:
    from PIL import Image

    from undiffuse.data import to_uint8
    from undiffuse.io import atomic_path

    u = to_uint8(x[:1])[0].numpy()
    img = Image.fromarray(u[..., 0] if u.shape[-1] == 1 else u)
    fmt = "JPEG" if path.lower().endswith((".jpg", ".jpeg")) else "PNG"
    with atomic_path(path) as tmp:
        img.save(tmp, format=fmt)


def run(args: argparse.Namespace) -> int:
    import torch

    import undiffuse.api as api
    from undiffuse import editing
    from undiffuse.errors import UserError
    from undiffuse.progress import progress
    from undiffuse.schedules.grids import discrete_sigmas

    if args.text is not None:  # fill the "_" of a text template (undiffuse.language)
        from undiffuse.cli.textlm import edit_text

        return edit_text(args)
    if args.table is not None:  # impute a table's empty cells (undiffuse.tables)
        from undiffuse.cli.tables import edit_table

        return edit_table(args)
    if args.image is None:
        raise UserError("give the --image to edit (or --table HOLES.csv to impute a table run's missing cells)")
    if not args.out.lower().endswith((".png", ".jpg", ".jpeg")):
        raise UserError(f"--out {args.out} must be a .png or .jpg image")
    if not 0 <= args.eta <= 1:
        raise UserError(f"--eta {args.eta} must lie in [0, 1]")
    if args.invert and (args.mask is not None or args.strength is not None):
        raise UserError("--invert reconstructs the whole image — drop --mask/--strength")
    if args.mask is not None and args.strength is not None:
        raise UserError("--strength is for SDEdit (no mask); inpainting regenerates the white region — drop one")
    if args.strength is not None and not (math.isfinite(args.strength) and 0 <= args.strength <= 1):
        raise UserError(f"--strength {args.strength} must lie in [0, 1]")
    if (args.resample > 1 or args.jump > 1) and args.mask is None:
        raise UserError("--resample/--jump are RePaint options — they need --mask")
    if args.sampler not in api.sampler_names():
        raise UserError(f"unknown sampler {args.sampler!r} — choose one of {', '.join(api.sampler_names())}")
    model = api.load(args.run_dir, args.checkpoint, ema=not args.raw, device=args.device)
    if model.data.kind != "image":
        raise UserError(f"edit needs an image model, and {args.run_dir} models {model.data.name} vectors")
    args.steps = 50 if args.steps is None else args.steps
    if args.steps > model.schedule.T:
        raise UserError(f"--steps {args.steps} exceeds the model's T = {model.schedule.T}")
    image, size = load_input(args.image, model.data.shape)
    mask = load_mask(args.mask, size, model.data.shape) if args.mask is not None else None
    m = model.config.model
    conditional = args.class_label is not None or args.prompt is not None or args.guidance is not None
    kw = api.conditioning(model, 1, args.class_label, args.prompt, args.guidance,
                          image if getattr(m, "sr_from", None) else None) if conditional or getattr(m, "sr_from", None) else {}  # fmt: skip
    cond = kw.get("cond", {})
    den = api.guided_denoiser(model, guidance=kw.get("guidance"))
    dev = model.device
    image = image.to(dev)
    sigmas = discrete_sigmas(model.schedule, args.steps).to(dev)
    gen = torch.Generator(device=dev).manual_seed(args.seed)
    extra = {"eta": args.eta} if args.sampler == "ddim" else {}
    strength = 0.6 if args.strength is None else args.strength
    moves = (2 * (args.steps - 1) if args.invert else len(editing.repaint_moves(args.steps, args.resample, args.jump))
             if mask is not None else args.steps - editing.sdedit_start(sigmas, strength))  # fmt: skip
    with torch.no_grad(), progress(total=moves, desc="edit", unit="step") as bar:
        step = lambda d: bar.update(1)  # noqa: E731
        if args.invert:
            latent = editing.ddim_invert(den, image, sigmas, cond=cond, callback=step)
            out = editing.ddim_reconstruct(den, latent, sigmas, cond=cond, callback=step)
            err = (out.clamp(-1, 1) - image).float()
            rmse = float(err.pow(2).mean().sqrt())
            psnr = 20 * math.log10(2.0 / rmse) if rmse > 0 else float("inf")
            report = (f"DDIM inversion + reconstruction over {args.steps} steps: RMSE {rmse:.4f} (in [-1, 1]), "
                      f"max |error| {float(err.abs().max()) * 127.5:.1f}/255, PSNR {psnr:.1f} dB")  # fmt: skip
        elif mask is not None:
            mask = mask.to(dev)
            out = editing.inpaint(den, image, mask, sigmas, sampler=args.sampler, generator=gen, cond=cond,
                                  resample=args.resample, jump=args.jump, callback=step, **extra)  # fmt: skip
            frac = float(mask.mean())
            report = (f"inpainted {frac:.0%} of the image ({args.sampler}, {args.steps} steps"
                      f"{f', RePaint resample {args.resample}, jump {args.jump}' if args.resample > 1 else ''})")
        else:
            out = editing.sdedit(den, image, strength, sigmas, sampler=args.sampler, generator=gen, cond=cond,
                                 callback=step, **extra)  # fmt: skip
            report = f"SDEdit at strength {strength} ({args.sampler}, {args.steps}-step grid)"
    save_image(out.clamp(-1, 1).cpu(), args.out)
    print(f"wrote {args.out}: {report}")
    return 0
