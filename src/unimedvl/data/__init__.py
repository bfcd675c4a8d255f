"""Data pipeline: JSONL records, medical image reading, image transforms and dataset validation.

Importing the package touches no files and loads no heavy library: names are imported on first
use (``from unimedvl.data import load_image`` imports ``medical_io`` then), and pydicom / nibabel
only when a DICOM or NIfTI file is opened.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "LoadedImage": "medical_io", "image_size": "medical_io", "load_array": "medical_io", "load_image": "medical_io",
    "parse_path_spec": "medical_io",
    "IMAGE_TOKEN": "records", "ImageRef": "records", "Problem": "records", "Record": "records", "Turn": "records",
    "parse_line": "records", "parse_record": "records", "read_jsonl": "records", "read_jsonl_lenient": "records",
    "ImageTransform": "transforms", "to_pil": "transforms", "to_tensor": "transforms",
    "Report": "validate", "validate_jsonl": "validate", "validate_sources": "validate",
}  # fmt: skip

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"unimedvl.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'unimedvl.data' has no attribute {name!r}")
