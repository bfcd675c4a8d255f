"""Metrics, one module per family: paired image quality (``image``: PSNR, SSIM, MS-SSIM), text
(``text``: VQA closed / open answers, multiple choice, report BLEU / ROUGE-L / METEOR / CIDEr-D),
FID (``fid``), which option a free-text answer picks (``choice_matching``), bootstrap intervals
(``uncertainty``) and how each metric is shown (``info``: label, unit, precision, range).

The names below are importable from here (``from unimedvl import metrics as M``; ``M.psnr``) and
are imported on first use, so ``import unimedvl.metrics`` pulls in neither scipy nor pytorch-msssim.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    **dict.fromkeys(
        [
            "FeatureExtractor",
            "compute_fid",
            "extract_features",
            "feature_stats",
            "fid_from_features",
            "frechet_distance",
            "load_feature_extractor",
            "pixelstats_extractor",
        ],
        "fid",
    ),
    **dict.fromkeys(
        [
            "ImageLike",
            "METRIC_MODES",
            "mean_std_finite",
            "ms_ssim",
            "paired_image_metrics",
            "psnr",
            "rescale_intensity",
            "ssim",
            "to_rgb_uint8",
        ],
        "image",
    ),
    **dict.fromkeys(
        [
            "RefsLike",
            "cider_d",
            "closed_correct",
            "corpus_bleu",
            "exact_match",
            "extract_choice",
            "meteor_exact",
            "multiple_choice_accuracy",
            "normalize_answer",
            "open_recall",
            "report_metrics",
            "rouge_l",
            "tokenize",
            "vqa_scores",
            "yes_no",
        ],
        "text",
    ),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"unimedvl.metrics.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'unimedvl.metrics' has no attribute {name!r}")
