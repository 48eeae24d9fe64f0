"""Metrics for generative models: Fréchet distances (FID), KID, precision/recall, density/coverage,
mode coverage of toy mixtures, and an in-domain classifier.

FID uses the TF Inception-v3 shipped offline by the optional extra ``undiffuse[fid]``; without it the
Inception functions raise MetricUnavailable and the other metrics still work.
"""

from .classifier import (
    ClassifierConfig,
    SmallClassifier,
    accuracy,
    classifier_frechet,
    train_classifier,
)
from .frechet import (
    feature_stats,
    frechet_distance,
    frechet_distance_from_features,
    kid,
    mmd2_unbiased,
)
from .inception import (
    EXTRACTOR_ID,
    InceptionFeatures,
    MetricUnavailable,
    as_nchw_uint8,
    inception_available,
    inception_weights_path,
    load_inception,
    tf_bilinear_resize,
    uint8_from_unit,
)
from .modes import mode_coverage, mode_histogram_kl
from .prdc import knn_radii, prdc, precision_recall
from .reference import (
    ReferenceStats,
    cache_path,
    default_cache_dir,
    fid_from_images,
    fid_report,
    reference_stats,
)

__all__ = [
    "EXTRACTOR_ID",
    "ClassifierConfig",
    "InceptionFeatures",
    "MetricUnavailable",
    "ReferenceStats",
    "SmallClassifier",
    "accuracy",
    "as_nchw_uint8",
    "cache_path",
    "classifier_frechet",
    "default_cache_dir",
    "feature_stats",
    "fid_from_images",
    "fid_report",
    "frechet_distance",
    "frechet_distance_from_features",
    "inception_available",
    "inception_weights_path",
    "kid",
    "knn_radii",
    "load_inception",
    "mmd2_unbiased",
    "mode_coverage",
    "mode_histogram_kl",
    "prdc",
    "precision_recall",
    "reference_stats",
    "tf_bilinear_resize",
    "train_classifier",
    "uint8_from_unit",
]
