"""Evaluation metrics in one namespace: paired image quality, VQA / multiple choice, report text, FID.

Each family lives in its own module (image_metrics, text_metrics, fid); import from here
(``from unimedvl.eval import metrics as M``) or from those directly.
"""

from unimedvl.eval.fid import (
    FeatureExtractor,
    compute_fid,
    extract_features,
    feature_stats,
    fid_from_features,
    frechet_distance,
    load_feature_extractor,
    pixelstats_extractor,
)
from unimedvl.eval.image_metrics import (
    METRIC_MODES,
    ImageLike,
    mean_std_finite,
    ms_ssim,
    paired_image_metrics,
    psnr,
    rescale_intensity,
    ssim,
    to_rgb_uint8,
)
from unimedvl.eval.text_metrics import (
    RefsLike,
    cider_d,
    closed_correct,
    corpus_bleu,
    exact_match,
    extract_choice,
    meteor_exact,
    multiple_choice_accuracy,
    normalize_answer,
    open_recall,
    report_metrics,
    rouge_l,
    tokenize,
    vqa_scores,
    yes_no,
)

__all__ = [
    "FeatureExtractor", "compute_fid", "extract_features", "feature_stats", "fid_from_features",
    "frechet_distance", "load_feature_extractor", "pixelstats_extractor",
    "METRIC_MODES", "ImageLike", "mean_std_finite", "ms_ssim", "paired_image_metrics", "psnr",
    "rescale_intensity", "ssim", "to_rgb_uint8",
    "RefsLike", "closed_correct", "cider_d", "corpus_bleu", "exact_match", "extract_choice", "meteor_exact",
    "multiple_choice_accuracy", "normalize_answer", "open_recall", "report_metrics", "rouge_l", "tokenize",
    "vqa_scores", "yes_no",
]
