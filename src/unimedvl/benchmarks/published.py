"""What was published about the standard benchmarks: question counts, the paper's columns and numbers;
and the checksums of the files read.

A split whose count differs from the published one is a different download (a re-packaging, a
partial copy, another language mix) and its accuracy is not the published measurement: the
commands say so. Counts (fact sheet sections 1-4 and the issue that asked for this check):

=================  ==========  ============  =======  ===========================================
benchmark          layout      split         count    source
=================  ==========  ============  =======  ===========================================
vqa-rad            any         test          451      OSF release (test_freeform + test_para); HF copy
vqa-rad            release     train         1,797    OSF release (freeform + para)
vqa-rad            parquet     train         1,793    flaviagiammarino/vqa-rad dataset card
slake (en)         release     test          1,061    SLAKE English test (LLaVA-Med, MultiMedEval)
path-vqa           parquet     test          6,719    flaviagiammarino/path-vqa (de-duplicated, lower-cased)
path-vqa           parquet     validation    6,259    flaviagiammarino/path-vqa
path-vqa           parquet     train         19,654   flaviagiammarino/path-vqa
path-vqa           release     test          6,761    the original pvqa/ release (LLaVA-Med-era papers)
omnimedvqa         release     open-access   88,996   OmniMedVQA Open-access QA files
=================  ==========  ============  =======  ===========================================

Checksums: :func:`file_checksums` gives the md5 (what VLMEvalKit checks its TSVs with) and size of
every file the questions were read from; ``convert`` / ``validate-data --benchmark`` print them,
``eval --benchmark`` writes them beside the converted JSONL (``<label>.sources.json``) and records
their combined digest (``source_md5``) in statistics.json.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# The UniMedVL paper's table (fact sheet section 8): its columns, the split each most likely reports,
# and the published rows (measured with the paper's own protocol and prompts; a reference, not a
# like-for-like comparison: eval/report/benchmark_table.py's FOOTNOTES say which of our metrics stands in each).
COLUMNS = ("VQA-RAD", "SLAKE", "PathVQA", "OmniMedVQA", "GMAI-MMBench")
CITATION = (
    'Ning et al., "UniMedVL: Unifying Medical Multimodal Understanding and Generation Through '
    'Observation-Knowledge-Analysis", arXiv:2510.15710 [cs.CV], 2025 '
    "(BibTeX key ning2025unimedvlunifyingmedicalmultimodal)"
)
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "UniMedVL-14B (published, paper's protocol)": dict(zip(COLUMNS, (61.9, 75.4, 53.5, 85.8, 60.75))),
    "BAGEL-7B (published, paper's protocol)": dict(zip(COLUMNS, (60.09, 58.91, 39.05, 71.13, 48.11))),
}
# The split the paper most likely reports per column (used when a model has runs on several).
PAPER_SPLITS = {
    "VQA-RAD": "test",
    "SLAKE": "test",
    "PathVQA": "test",
    "OmniMedVQA": "open-access",
    "GMAI-MMBench": "VAL",
}
# (benchmark, layout or "any", split, language or None) -> (count, where the number comes from)
PUBLISHED: dict[tuple[str, str, str, str | None], tuple[int, str]] = {
    ("vqa-rad", "any", "test", None): (451, "the OSF release and the HF copy"),
    ("vqa-rad", "release", "train", None): (1797, "the OSF release"),
    ("vqa-rad", "parquet", "train", None): (1793, "flaviagiammarino/vqa-rad"),
    ("slake", "release", "test", "en"): (1061, "SLAKE's English test split"),
    ("path-vqa", "parquet", "test", None): (6719, "flaviagiammarino/path-vqa"),
    ("path-vqa", "parquet", "validation", None): (6259, "flaviagiammarino/path-vqa"),
    ("path-vqa", "parquet", "train", None): (19654, "flaviagiammarino/path-vqa"),
    ("path-vqa", "release", "test", None): (6761, "the original pvqa/ release"),
    ("omnimedvqa", "release", "open-access", None): (88996, "OmniMedVQA's Open-access files"),
}


def published_count(benchmark: str, layout: str, split: str | None, language: str) -> tuple[int, str] | None:
    """(count, source) of a benchmark split, or None when no count is published (or the split is 'all')."""
    if split is None:
        return None
    for key_layout in (layout, "any"):
        for key_language in (language, None):
            found = PUBLISHED.get((benchmark, key_layout, split, key_language))
            if found is not None and (key_language is not None or benchmark != "slake"):
                return found
    return None


def count_warning(benchmark: str, layout: str, split: str | None, language: str, read: int) -> str | None:
    """One line when ``read`` questions differ from the published count, else None."""
    found = published_count(benchmark, layout, split, language)
    if found is None or found[0] == read:
        return None
    count, source = found
    return (
        f"warning: {read:,} question(s) in {benchmark} {split}, but {source} has {count:,}: a different or partial "
        "download, so its accuracy is not the published measurement"
    )


def file_checksums(paths: Iterable[str | Path]) -> dict[str, dict[str, Any]]:
    """path -> {md5, size} of each file (in name order), read in 1 MiB blocks."""
    out = {}
    for path in sorted({str(p) for p in paths}):
        digest, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with open(path, "rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
                    size += len(block)
        except OSError:
            continue
        out[path] = {"md5": digest.hexdigest(), "size": size}
    return out


def combined_digest(checksums: dict[str, dict[str, Any]]) -> str:
    """12 hex digits identifying the whole set of files (the md5s of their names and contents)."""
    text = "".join(f"{Path(p).name}:{c['md5']}\n" for p, c in sorted(checksums.items()))
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()[:12]
