"""Data pipeline: JSONL records, dataset types and mixes, packing, the loader and dataset validation.

The image readers and transforms live in :mod:`unimedvl.imaging`; their names are re-exported here.

Importing the package touches no files and loads no heavy library: names are imported on first
use (``from unimedvl.data import load_image`` imports ``medical_io`` then), and pydicom / nibabel
only when a DICOM or NIfTI file is opened.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LoadedImage": "unimedvl.imaging.medical_io",
    "image_size": "unimedvl.imaging.medical_io",
    "load_array": "unimedvl.imaging.medical_io",
    "load_image": "unimedvl.imaging.medical_io",
    "parse_path_spec": "unimedvl.imaging.medical_io",
    "IMAGE_TOKEN": "unimedvl.data.records",
    "ImageRef": "unimedvl.data.records",
    "Problem": "unimedvl.data.records",
    "Record": "unimedvl.data.records",
    "Turn": "unimedvl.data.records",
    "parse_line": "unimedvl.data.records",
    "parse_record": "unimedvl.data.records",
    "read_jsonl": "unimedvl.data.records",
    "read_jsonl_lenient": "unimedvl.data.records",
    "ImageTransform": "unimedvl.imaging.transforms",
    "to_pil": "unimedvl.imaging.transforms",
    "to_tensor": "unimedvl.imaging.transforms",
    "Report": "unimedvl.data.validate",
    "validate_jsonl": "unimedvl.data.validate",
    "validate_sources": "unimedvl.data.validate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'unimedvl.data' has no attribute {name!r}")
