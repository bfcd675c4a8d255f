"""PathVQA's original release (``pvqa/``): question pickles read without unpickling arbitrary objects.

The release the LLaVA-Med-era papers used (He et al. 2020, distributed as ``pvqa.zip``): question
files ``pvqa/qas/<split>/<split>_qa.pkl`` (also found as ``pvqa/qas/<split>_qa.pkl``), each a
pickled list of ``{"image": "test_0000", "question": ..., "answer": ...}`` dicts, and images
``pvqa/images/<split>/<image>.jpg``; splits train / val / test. Its test split has 6,761 questions;
the Hugging Face copy ``flaviagiammarino/path-vqa`` has 6,719, because that copy removed duplicate
questions and lower-cased the text, so results on the two are not the same measurement
(BENCHMARKS.md).

A pickle can run code when loaded, so these are read by :class:`PlainUnpickler`, which builds only
lists, dicts, strings, numbers, booleans and None (the opcodes of those types never look a class
up) and refuses every other object with a DataError naming the file.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from unimedvl.errors import DataError

# The suffixes the release's image files carry, in lookup order: a fact of this data set, not the list of
# formats the loader reads (that one is unimedvl.imaging.formats.IMAGE_SUFFIXES).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


class PlainUnpickler(pickle.Unpickler):
    """An unpickler for plain data: any class or function lookup is refused."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only lists, dicts, strings and numbers are read from a question pickle"
        )


def load_plain_pickle(path: Path) -> Any:
    """The content of a pickle of plain data; DataError naming the file for anything else."""
    try:
        return PlainUnpickler(io.BytesIO(path.read_bytes())).load()
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise DataError(f"{path}: not a plain-data question pickle ({err})") from None


def release_root(path: Path) -> Path | None:
    """The ``pvqa`` folder (``path`` itself, or ``path/pvqa``) when it holds ``qas/`` question pickles."""
    for root in (path, path / "pvqa"):
        if (root / "qas").is_dir() and question_files(root):
            return root
    return None


def question_files(root: Path) -> dict[str, Path]:
    """split -> its ``<split>_qa.pkl``."""
    found = sorted(root.glob("qas/*_qa.pkl")) + sorted(root.glob("qas/*/*_qa.pkl"))
    return {p.name[: -len("_qa.pkl")]: p for p in reversed(found)}


def image_path(root: Path, split: str, name: str) -> Path:
    """Where a question's image is: ``images/<split>/<name>`` with the first suffix present (``.jpg`` if none)."""
    base = root / "images" / split / name
    if base.suffix.lower() in IMAGE_SUFFIXES:
        return base
    return next(
        (base.with_suffix(s) for s in IMAGE_SUFFIXES if base.with_suffix(s).is_file()), base.with_suffix(".jpg")
    )
