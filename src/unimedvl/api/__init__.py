"""The OpenAI-compatible HTTP API (``unimedvl api``): chat and image routes on one loaded model.

Modules: ``settings`` (flags and limits), ``batcher`` (the queue and the worker that batches
concurrent requests into ``Inferencer.run`` calls), ``uploads`` (data URLs and multipart files to
images), ``answers`` (decoded text to message fields, streamed or whole), ``chat`` and ``images``
(the routes), ``middleware`` (API key, body limit, timing), ``metrics`` (Prometheus text),
``errors`` (OpenAI's error shape), ``service`` (what the routes share), ``server`` (the app and
a uvicorn thread), ``cli`` (the command). Names are imported on first use so that
``unimedvl api --help`` imports neither torch nor fastapi.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "BackgroundServer": "unimedvl.api.server",
    "ServerSettings": "unimedvl.api.settings",
    "create_app": "unimedvl.api.server",
    "register": "unimedvl.api.cli",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unimedvl.api' has no attribute {name!r}")
