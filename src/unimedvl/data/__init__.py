"""Data pipeline: JSONL records, medical image reading, image transforms and dataset validation.

Importing the package touches no files; pydicom and nibabel are imported only when a DICOM or
NIfTI file is opened.
"""

from unimedvl.data.medical_io import LoadedImage, image_size, load_array, load_image, parse_path_spec
from unimedvl.data.records import (
    IMAGE_TOKEN,
    ImageRef,
    Problem,
    Record,
    Turn,
    parse_line,
    parse_record,
    read_jsonl,
    read_jsonl_lenient,
)
from unimedvl.data.transforms import ImageTransform, to_pil, to_tensor
from unimedvl.data.validate import Report, validate_jsonl, validate_sources

__all__ = [
    "IMAGE_TOKEN",
    "ImageRef",
    "ImageTransform",
    "LoadedImage",
    "Problem",
    "Record",
    "Report",
    "Turn",
    "image_size",
    "load_array",
    "load_image",
    "parse_line",
    "parse_path_spec",
    "parse_record",
    "read_jsonl",
    "read_jsonl_lenient",
    "to_pil",
    "to_tensor",
    "validate_jsonl",
    "validate_sources",
]
