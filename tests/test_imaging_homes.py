"""One home for images (issue 27): every image read goes through the guarded readers of ``imaging/``,
the suffix list and the resizes live there, and uploads decode from memory. Read from the source with
``ast`` (the rules) and checked on real files (the behaviour)."""

from __future__ import annotations

import ast
import struct
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import unimedvl
from unimedvl.errors import DataError
from unimedvl.imaging import formats, transforms
from unimedvl.imaging.medical_io import load_array, load_bytes
from unimedvl.imaging.raw import read_stored
from unimedvl.imaging.views import ViewOptions, decode_view, load_view

PACKAGE = Path(unimedvl.__file__).parent
SOURCES = {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text(), str(p)) for p in PACKAGE.rglob("*.py")}
OUTSIDE_IMAGING = {name: tree for name, tree in SOURCES.items() if not name.startswith("imaging/")}
IMAGE_SUFFIX = {*formats.IMAGE_SUFFIXES, ".jpg", ".gz"}
# Reads that stay outside the guarded readers, each with its reason.
READ_EXCEPTIONS = {
    # The real-image set reads nibabel's own bundled test volume whole (its percentiles are taken over
    # the volume, which the loader's one-slice reader does not give); a fixed, known, small file.
    ("medsynth/real_set.py", "nibabel.load"),
}
SUFFIX_EXCEPTIONS = {
    "benchmarks/pvqa_release.py",  # the suffixes PathVQA's release files carry: a fact of that data set
}
RESIZE_EXCEPTIONS = {
    ("models/autoencoder.py", "interpolate"),  # the decoder's 2x nearest upsampling: a network layer
    ("app/backend.py", "thumbnail"),  # the chat picture: to use transforms.thumbnail (another branch's file)
}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, _dotted(node.func)


def image_reads(tree: ast.AST) -> list[str]:
    """The direct image reads in a module: PIL's Image.open, pydicom / nibabel / numpy file loads, and
    any import of another image reader (imageio, cv2, skimage.io)."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "PIL.Image":
            found += [f"from PIL.Image import {a.name}" for a in node.names if a.name == "open"]
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else ([node.module or ""] if isinstance(node, ast.ImportFrom) else [])
        )
        found += [f"import {n}" for n in names if n.split(".")[0] in ("imageio", "cv2") or n == "skimage.io"]
    for _, name in _calls(tree):
        if name in (
            "Image.open",
            "PIL.Image.open",
            "np.load",
            "numpy.load",
            "nibabel.load",
            "nib.load",
        ) or name.endswith("dcmread"):
            found.append(name)
    return found


def suffix_lists(tree: ast.AST) -> list[int]:
    """Lines of tuple / list / set / dict literals holding two or more image suffixes."""
    lines = []
    for node in ast.walk(tree):
        items = node.keys + node.values if isinstance(node, ast.Dict) else getattr(node, "elts", None)
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)) or items is None:
            continue
        hits = [
            i
            for i in items
            if isinstance(i, ast.Constant) and isinstance(i.value, str) and i.value.lower() in IMAGE_SUFFIX
        ]
        if len(hits) >= 2:
            lines.append(node.lineno)
    return lines


def resizes(tree: ast.AST) -> list[str]:
    """Resize calls: PIL's resize / thumbnail / reduce and torch's interpolate."""
    return [
        name.rsplit(".", 1)[-1]
        for _, name in _calls(tree)  # method calls: bare names are our helpers
        if "." in name
        and name.rsplit(".", 1)[-1] in ("resize", "thumbnail", "reduce", "interpolate")
        and not name.startswith(("transforms.", "self.vae_transform"))
    ]


def test_no_module_outside_imaging_reads_image_files_itself():
    found = {(name, read) for name, tree in OUTSIDE_IMAGING.items() for read in image_reads(tree)}
    assert found - READ_EXCEPTIONS == set(), "read images through unimedvl.imaging (medical_io, raw, views)"
    assert READ_EXCEPTIONS <= found, "an exception that no longer applies: remove it"


def test_image_suffix_lists_live_in_imaging_formats():
    found = {name: lines for name, tree in OUTSIDE_IMAGING.items() if (lines := suffix_lists(tree))}
    assert set(found) - SUFFIX_EXCEPTIONS == set(), f"use unimedvl.imaging.formats instead: {found}"


def test_resizing_lives_in_imaging_transforms():
    found = {(name, call) for name, tree in OUTSIDE_IMAGING.items() for call in resizes(tree)}
    assert found - RESIZE_EXCEPTIONS == set(), "resize through unimedvl.imaging.transforms"


def test_the_rules_can_fail():
    bad = ast.parse(
        "from PIL import Image\nim = Image.open('x.png')\nimport cv2\nEXT = ('.png', '.dcm')\n"
        "small = im.resize((2, 2))\nimport numpy as np\nnp.load('a.npy')\n"
    )
    assert image_reads(bad) == ["import cv2", "Image.open", "np.load"]
    assert suffix_lists(bad) == [4] and resizes(bad) == ["resize"]


# -- behaviour ---------------------------------------------------------------------------------------


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width x height`` grey pixels but holds almost none (a decompression bomb's header)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_metrics_and_report_refuse_an_image_over_the_pixel_limit(tmp_path):
    from unimedvl.eval.report.samples import sample_card
    from unimedvl.metrics.image import paired_image_metrics

    bomb = tmp_path / "images" / "s1_pred.png"
    bomb.parent.mkdir()
    bomb.write_bytes(_png_header_only(20000, 20000))  # 400 MP declared in 100 bytes
    with pytest.raises(DataError, match="s1_pred.png: image is 20000x20000 .* over the default limit"):
        paired_image_metrics(bomb, bomb)
    card = sample_card(tmp_path, {"sample_id": "s1", "kind": "edit", "images": {"pred": "images/s1_pred.png"}}, 64)
    assert "not found" in card and "base64" not in card


def test_native_metrics_read_the_stored_16_bit_values(tmp_path):
    from unimedvl.metrics.image import paired_image_metrics

    values = np.random.default_rng(0).integers(0, 4096, (24, 32), dtype=np.uint16)  # 12-bit data in 16 bits
    Image.fromarray(values).save(tmp_path / "gt.png")
    np.save(tmp_path / "pred.npy", values + 16)
    assert np.array_equal(read_stored(tmp_path / "gt.png"), values)  # not windowed to 8 bits
    out = paired_image_metrics(tmp_path / "pred.npy", tmp_path / "gt.png", mode="native")
    assert out["data_range"] == 65535.0 and out["psnr"] == pytest.approx(20 * np.log10(65535 / 16))
    with pytest.raises(DataError, match="pred.npy: image is 32x24"):
        read_stored(tmp_path / "pred.npy", max_image_pixels=100)


def _files(tmp_path: Path) -> dict[str, Path]:
    nib = pytest.importorskip("nibabel")
    rng = np.random.default_rng(1)
    out = {}
    Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)).save(out.setdefault("png16", tmp_path / "a.png"))
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(out.setdefault("jpg", tmp_path / "b.jpg"))
    np.save(out.setdefault("npy", tmp_path / "c.npy"), rng.normal(size=(12, 9)).astype(np.float32))
    volume = rng.normal(size=(10, 12, 7)).astype(np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(out.setdefault("nii", tmp_path / "d.nii")))
    nib.save(nib.Nifti2Image(volume, np.eye(4)), str(out.setdefault("nii2", tmp_path / "e.nii.gz")))
    return out


def test_upload_bytes_decode_as_the_file_does_and_write_nothing(tmp_path, monkeypatch):
    pydicom = pytest.importorskip("pydicom")
    files = _files(tmp_path)
    files["dcm"] = Path(pydicom.__file__).parent / "data" / "test_files" / "CT_small.dcm"
    views = {
        "nii": ViewOptions(axis=1, slice=3),
        "nii2": ViewOptions(window="minmax"),
        "dcm": ViewOptions(window="lung"),
    }

    def no_temp_files(*args, **kwargs):
        raise AssertionError("an upload was written to a temporary file")

    for name in ("mkstemp", "mkdtemp", "NamedTemporaryFile", "TemporaryDirectory", "TemporaryFile"):
        monkeypatch.setattr(tempfile, name, no_temp_files)
    for key, path in files.items():
        view = views.get(key, ViewOptions())
        want = load_view(path, view, 10**6)
        suffix = formats.image_suffix(path.name)
        got = decode_view(path.read_bytes(), suffix, view, 10**6, "upload")
        assert np.array_equal(got.to_uint8(), want.to_uint8()) and got.window == want.window, key
        assert got.meta == want.meta and got.kind == want.kind, key
    with pytest.raises(DataError, match="^upload: image is 20000x20000"):
        decode_view(_png_header_only(20000, 20000), ".png", ViewOptions(), 10**6, "upload")
    with pytest.raises(DataError, match="^upload: "):
        load_bytes(b"not an image at all", "upload", format="nifti")


def test_suffixes_name_one_reader_each():
    assert formats.format_of("head.NII.GZ") == "nifti" and formats.format_of("scan.ima") == "dicom"
    assert formats.format_of("x.webp") == "raster" and formats.format_of("notes.txt") is None
    assert set(formats.UPLOAD_SUFFIXES) <= set(formats.IMAGE_SUFFIXES)
    assert formats.image_suffix("a.nii.gz") == ".nii.gz" and formats.image_suffix(".png") is None
    for fmt, suffixes in formats.FORMAT_SUFFIXES.items():
        assert all(formats.format_of(f"f{s}") == fmt for s in suffixes)


def test_load_array_and_load_bytes_agree_on_a_sniffed_dicom(tmp_path):
    pydicom = pytest.importorskip("pydicom")
    data = (Path(pydicom.__file__).parent / "data" / "test_files" / "MR_small.dcm").read_bytes()
    (tmp_path / "noext").write_bytes(data)
    assert np.array_equal(load_bytes(data, "noext").pixels, load_array(tmp_path / "noext").pixels)


def test_resize_helpers():
    image = Image.new("RGB", (40, 20), (10, 20, 30))
    assert transforms.resize(image, (40, 20)) is image and transforms.resize(image, (8, 4)).size == (8, 4)
    assert transforms.thumbnail(image, 10).size == (10, 5) and image.size == (40, 20)
    grey = np.arange(12 * 16, dtype=np.float32).reshape(12, 16)
    half = transforms.resize_array(grey, (8, 6))
    assert half.dtype == np.float64 and half.shape == (6, 8)
    assert np.array_equal(half, np.asarray(Image.fromarray(grey).resize((8, 6), Image.Resampling.BICUBIC)))
    assert transforms.down_up(np.zeros((9, 7), np.uint8), 4).shape == (9, 7)


def test_training_images_are_squashed_or_kept_at_scale(tmp_path):
    from unimedvl.data.image_sets import load_training_image

    Image.fromarray(np.zeros((50, 70, 3), np.uint8)).save(tmp_path / "x.png")
    assert tuple(load_training_image(str(tmp_path / "x.png"), 64, "resize", 8).shape) == (3, 64, 64)
    assert tuple(load_training_image(str(tmp_path / "x.png"), 64, "crop", 8).shape) == (3, 64, 90)
