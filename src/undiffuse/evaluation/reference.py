"""Reference statistics (μ, Σ of a dataset's features), cached on disk, and FID reports that state their protocol.

A FID is only comparable with another when the protocol matches: the feature extractor and its resize,
the reference split, and the number of samples on both sides (FID is biased upwards for small N;
Chong & Forsyth 2020, "Effectively Unbiased FID"). Every number produced here therefore travels with
those facts, and the cache key contains all of them.

Cache files are ``.npz`` (numpy, read with allow_pickle=False) under ``~/.cache/undiffuse/fid/`` by
default (``$UNDIFFUSE_CACHE`` overrides the root), written atomically.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..io import atomic_write, cache_root
from .frechet import feature_stats, frechet_distance, frechet_distance_from_features
from .inception import InceptionFeatures

FeaturesFn = Callable[[Any], torch.Tensor | np.ndarray]
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
    """``$UNDIFFUSE_CACHE/fid`` if set, else ``~/.cache/undiffuse/fid``."""
    return cache_root() / "fid"


@dataclass(frozen=True)
class ReferenceStats:
    """μ [D] and Σ [D, D] (float64) of a reference set's features, with the facts that define them."""

    mu: np.ndarray
    sigma: np.ndarray
    name: str
    split: str
    n_images: int
    extractor_id: str

    def describe(self) -> dict[str, Any]:
        """The protocol part of a report: which data, how many images, which features."""
        return {"name": self.name, "split": self.split, "n_images": self.n_images}


def extractor_id_of(features_fn: FeaturesFn, extractor_id: str | None = None) -> str:
    """The explicit id, else ``features_fn.extractor_id``; a cache without an id would mix extractors."""
    fid = extractor_id or getattr(features_fn, "extractor_id", None)
    if not fid:
        raise ValueError("pass extractor_id= or give features_fn an `extractor_id` attribute")
    return str(fid)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:48] or "x"


def cache_path(cache_dir: str | os.PathLike, name: str, split: str, n_images: int, extractor_id: str) -> Path:
    """``<name>-<split>-n<N>-<short id>-<hash>.npz``; the hash covers the full extractor id."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}|{name}|{split}|{n_images}|{extractor_id}".encode()).hexdigest()
    stem = f"{_slug(name)}-{_slug(split)}-n{n_images}-{_slug(extractor_id)[:24]}-{digest[:12]}"
    return Path(cache_dir) / f"{stem}.npz"


def _load_cached(path: Path, key: dict[str, Any]) -> ReferenceStats | None:
    """Read a cache file; None if it is missing, unreadable or written for another key."""
    try:
        with np.load(path, allow_pickle=False) as z:
            stored = {k: z[k].item() for k in ("name", "split", "n_images", "extractor_id", "format")}
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except (OSError, KeyError, ValueError):
        return None
    if stored != {**key, "format": CACHE_FORMAT}:
        return None
    return ReferenceStats(mu=mu, sigma=sigma, **key)


def _save_cached(path: Path, stats: ReferenceStats) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                mu=stats.mu,
                sigma=stats.sigma,
                name=np.str_(stats.name),
                split=np.str_(stats.split),
                n_images=np.int64(stats.n_images),
                extractor_id=np.str_(stats.extractor_id),
                format=np.int64(CACHE_FORMAT),
            )

    atomic_write(path, write)


def reference_stats(
    name: str,
    split: str,
    features_fn: FeaturesFn,
    images_fn: Callable[[], Any],
    cache_dir: str | os.PathLike | None = None,
    *,
    n_images: int | None = None,
    extractor_id: str | None = None,
) -> ReferenceStats:
    """μ, Σ of ``features_fn(images_fn())``, read from the cache when present, else computed and stored.

    Args:
        name, split: dataset name and split (e.g. "fashion-mnist", "train"), part of the key.
        features_fn: images → features [N, D] (e.g. InceptionFeatures, or a classifier's features).
        images_fn: called with no argument, returns the reference images (only on a cache miss when
            ``n_images`` is given; otherwise called to count them).
        cache_dir: cache folder (default ``default_cache_dir()``).
        n_images: number of reference images, part of the key; checked against what images_fn returns.
        extractor_id: feature-extractor id (default ``features_fn.extractor_id``).
    """
    fid = extractor_id_of(features_fn, extractor_id)
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    images = None
    if n_images is None:
        images = images_fn()
        n_images = len(images)
    key = {"name": name, "split": split, "n_images": int(n_images), "extractor_id": fid}
    path = cache_path(cache_dir, name, split, int(n_images), fid)
    cached = _load_cached(path, key)
    if cached is not None:
        return cached
    if images is None:
        images = images_fn()
    if len(images) != n_images:
        raise ValueError(f"images_fn returned {len(images)} images, expected n_images={n_images}")
    mu, sigma = feature_stats(features_fn(images))
    stats = ReferenceStats(mu=mu, sigma=sigma, **key)
    _save_cached(path, stats)
    return stats


def fid_report(
    samples: Any,
    reference: ReferenceStats,
    features_fn: FeaturesFn,
    *,
    extractor_id: str | None = None,
) -> dict[str, Any]:
    """FID of ``samples`` against cached reference statistics, with the protocol that defines the number.

    Returns dict(fid, n_samples, reference=dict(name, split, n_images), feature_extractor).
    """
    fid_id = extractor_id_of(features_fn, extractor_id)
    if fid_id != reference.extractor_id:
        raise ValueError(f"reference stats use {reference.extractor_id!r}, samples would use {fid_id!r}")
    mu, sigma = feature_stats(features_fn(samples))
    return {
        "fid": frechet_distance(mu, sigma, reference.mu, reference.sigma),
        "n_samples": len(samples),
        "reference": reference.describe(),
        "feature_extractor": fid_id,
    }


def fid_from_images(
    images_a: torch.Tensor,
    images_b: torch.Tensor,
    *,
    features_fn: FeaturesFn | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 64,
) -> float:
    """FID between two sets of uint8 images (Inception features unless ``features_fn`` is given).

    Raises MetricUnavailable when the Inception package is not installed.
    """
    if features_fn is None:
        features_fn = InceptionFeatures(device, batch_size=batch_size)
    return frechet_distance_from_features(features_fn(images_a), features_fn(images_b))
