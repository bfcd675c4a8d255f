"""Inference: contexts on the KV cache, batched requests, the ``UniMedVL`` API and the CLI commands.

Names are imported on first use, so ``import unimedvl.inference`` (e.g. by the CLI's ``--help``)
does not load torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "UniMedVL": "unimedvl.inference.api",
    "ChatSession": "unimedvl.inference.api",
    "Answer": "unimedvl.inference.api",
    "ImageAnswer": "unimedvl.inference.api",
    "Inferencer": "unimedvl.inference.inferencer",
    "Request": "unimedvl.inference.inferencer",
    "Result": "unimedvl.inference.inferencer",
    "ContextPool": "unimedvl.inference.context",
    "Context": "unimedvl.inference.context",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unimedvl.inference' has no attribute {name!r}")
