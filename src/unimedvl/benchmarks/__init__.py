"""Readers of the standard medical benchmarks, as their publishers ship them (library code).

One module per format; each turns a publisher's files into :class:`~unimedvl.benchmarks.items.
BenchmarkItem` questions, which :mod:`unimedvl.benchmarks.convert` writes as our JSONL records
(so ``unimedvl eval --benchmark`` runs the ordinary batch evaluator, and the same sets can be used
for fine-tuning). Scoring lives in :mod:`unimedvl.benchmarks.scoring` (application layer).

==============  =================================================================
name            reads
==============  =================================================================
vqa-rad         OSF release JSON + image folder, or the HF copy (any download layout)
slake           Slake1.0 split JSONs + imgs/ or imgs.zip (English by default)
path-vqa        the HF copy (any download layout), or the original pvqa/ pickles
omnimedvqa      QA_information/<access>/*.json + Images/
vlmevalkit      any VLMEvalKit TSV (base64 images, option columns)
gmai-mmbench    the GMAI-MMBench VLMEvalKit TSV, with its breakdowns
llava-med       LLaVA-Med conversation JSON (id, image, conversations, answer_type)
==============  =================================================================

"Any download layout": parquet snapshot, hub cache, ``datasets`` Arrow cache or ``save_to_disk``
folder (:mod:`unimedvl.benchmarks.hf_layouts`); published counts and file checksums:
:mod:`unimedvl.benchmarks.published`.
"""

from __future__ import annotations

from unimedvl.benchmarks.llava_med import LlavaMed
from unimedvl.benchmarks.omnimedvqa import OmniMedVqa
from unimedvl.benchmarks.path_vqa import PathVqa
from unimedvl.benchmarks.reader import Reader, ReadOptions
from unimedvl.benchmarks.slake import Slake
from unimedvl.benchmarks.vlmevalkit import GmaiMmBench, VlmEvalKit
from unimedvl.benchmarks.vqa_rad import VqaRad
from unimedvl.errors import ConfigError

READERS: dict[str, type[Reader]] = {
    r.name: r for r in (VqaRad, Slake, PathVqa, OmniMedVqa, VlmEvalKit, GmaiMmBench, LlavaMed)
}
NAMES = tuple(READERS)


def get_reader(name: str) -> Reader:
    """The reader registered under ``name`` (ConfigError listing the names when there is none)."""
    key = name.strip().lower().replace("_", "-")
    if key not in READERS:
        raise ConfigError(f"--benchmark {name!r} is not known; choose one of {', '.join(NAMES)}")
    return READERS[key]()


__all__ = ["NAMES", "READERS", "ReadOptions", "Reader", "get_reader"]
