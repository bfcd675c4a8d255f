"""The web app (``unimedvl serve``): a Gradio page with Ask, Edit / translate and Generate tabs.

Modules: ``presets`` (settings, task templates, guidance presets), ``uploads`` (which files are
read and how), ``examples`` (example inputs made at startup), ``backend`` (the actions, without
gradio), ``ui`` (the page: :func:`build_app`, :func:`launch`), ``cli`` (the ``serve`` command).
Names are imported on first use so that ``import unimedvl.app`` does not import gradio.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AppSettings": "unimedvl.app.presets",
    "build_app": "unimedvl.app.ui",
    "launch": "unimedvl.app.ui",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unimedvl.app' has no attribute {name!r}")
