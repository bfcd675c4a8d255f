"""A small real-image restoration evaluation set, built at run time from installed packages.

Real medical images ship inside some PyPI packages (spec/environment.md); this module reads them
where they are installed, so nothing is copied into the repository:

- pydicom ``data/test_files/CT_small.dcm`` (CT) and ``MR_small.dcm`` (MRI), found via ``pydicom.__file__``
  (``get_testdata_file`` is never called: for a file that is not bundled it tries the network);
- nibabel ``tests/data/anatomical.nii`` (brain MRI volume): the middle slice along each axis;
- dipy ``data/files/t1_coronal_slice.npy`` (T1 brain slice), located without importing dipy;
- scikit-image ``data.immunohistochemistry()`` (four 256 px crops, IHC histology) and ``data.retina()``
  (fundus, downsized).

Each image becomes a square ``image_size`` clean target and four degraded -> clean pairs (denoising,
deblurring, 2x and 4x super-resolution) made with the same degradations and record format as MedSynth
(:mod:`unimedvl.medsynth.generator`). Every record names its origin in ``source``. A missing package or
file skips that source with a warning; :class:`~unimedvl.errors.DataError` only if none is left.

Layout: ``out_dir/images/<name>_clean.png``, ``out_dir/images/<name>_<degrade_type>.png``,
``out_dir/test.jsonl`` and ``out_dir/dataset_info.yaml`` (absolute paths, resolved at write time).
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np

from unimedvl.errors import DataError
from unimedvl.imaging.medical_io import load_array
from unimedvl.imaging.raw import read_array
from unimedvl.imaging.transforms import resize_array
from unimedvl.medsynth.generator import check_image_size, restoration_pair
from unimedvl.medsynth.writers import prepare_output_dir, save_png, write_jsonl, write_yaml

RESTORATION_TASKS = (("denoising", 0), ("deblurring", 0), ("super_resolution", 0), ("super_resolution", 1))
# (task, index): index parity picks the variant (SR: 0 -> x2, 1 -> x4; denoising: Gaussian / Poisson)


@dataclass(frozen=True)
class RealImage:
    """One clean real image, already square and at the target size."""

    name: str  # short id used in file names and sample ids, e.g. "pydicom_ct_small"
    modality: str  # "ct", "mri", "histology" or "fundus"
    image: np.ndarray  # uint8, (S, S) grey or (S, S, 3) RGB
    source: str  # provenance: package, version, file inside it, and how it was converted


def _package_dir(name: str) -> Path:
    """Folder of an installed package, without importing it (ImportError when it is not installed)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"package {name!r} is not installed")
    return Path(list(spec.submodule_search_locations)[0])


def _version(name: str) -> str:
    """Installed distribution version, for provenance text ('unknown' when metadata is missing)."""
    try:
        return metadata.version("scikit-image" if name == "skimage" else name)
    except metadata.PackageNotFoundError:
        return "unknown"


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in this installation")
    return path


def _unit_grey(x: np.ndarray, lo_pct: float = 0.5, hi_pct: float = 99.5) -> np.ndarray:
    """Robust min-max to [0, 1] (percentiles, so a few hot pixels do not flatten the image)."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = np.percentile(x, [lo_pct, hi_pct])
    return np.clip((x - lo) / max(hi - lo, 1e-8), 0.0, 1.0)


def _crop_foreground(x: np.ndarray, thresh: float = 0.05, margin: float = 0.05) -> np.ndarray:
    """Crop a [0, 1] grey image to the box around pixels above ``thresh`` (plus a margin), so a small
    head in a wide black field still fills the output."""
    ys, xs = np.nonzero(x > thresh)
    if ys.size == 0:
        return x
    my, mx = int(margin * x.shape[0]) + 1, int(margin * x.shape[1]) + 1
    return x[max(ys.min() - my, 0) : ys.max() + my + 1, max(xs.min() - mx, 0) : xs.max() + mx + 1]


def _square(img: np.ndarray, size: int) -> np.ndarray:
    """Pad to a square (with black) and resize to ``size`` (Lanczos); float [0, 1] or uint8 in, uint8 out."""
    if img.dtype != np.uint8:
        img = np.round(np.clip(img, 0.0, 1.0) * 255.0).astype(np.uint8)
    h, w = img.shape[:2]
    side = max(h, w)
    pad = [((side - h) // 2, side - h - (side - h) // 2), ((side - w) // 2, side - w - (side - w) // 2)]
    img = np.pad(img, pad + [(0, 0)] * (img.ndim - 2))
    return resize_array(img, (size, size), "lanczos")


def _from_pydicom(size: int) -> list[RealImage]:
    folder = _package_dir("pydicom") / "data" / "test_files"
    out = []
    for fname, modality in (("CT_small.dcm", "ct"), ("MR_small.dcm", "mri")):
        # The loader's DICOM reader gives the stored units after the modality rescale (HU for CT); our
        # own window follows: a fixed soft-tissue window for CT and a robust min-max for MR.
        x = load_array(_existing(folder / fname), format="dicom", window="minmax").pixels.astype(np.float64)
        if modality == "ct":
            level, width = 40.0, 400.0
            x, how = np.clip((x - (level - width / 2)) / width, 0, 1), f"HU, window L{level:g}/W{width:g}"
        else:
            x, how = _unit_grey(x), "percentile 0.5-99.5 min-max"
        name = f"pydicom_{fname.split('.')[0].lower()}"
        out.append(
            RealImage(
                name,
                modality,
                _square(x, size),
                f"pydicom {_version('pydicom')}: pydicom/data/test_files/{fname} ({how})",
            )
        )
    return out


def _from_nibabel(size: int) -> list[RealImage]:
    import nibabel  # noqa: PLC0415 -- optional source

    path = _existing(Path(nibabel.__file__).parent / "tests" / "data" / "anatomical.nii")
    # Read whole, past the loader (its NIfTI reader gives one slice): the window is taken over the
    # volume. The file is nibabel's own small bundled test volume, not user input.
    vol = _unit_grey(np.asarray(nibabel.load(str(path)).dataobj, dtype=np.float64))
    out = []
    for axis in range(3):
        sl = _crop_foreground(np.rot90(np.take(vol, vol.shape[axis] // 2, axis=axis)))
        out.append(
            RealImage(
                f"nibabel_anatomical_axis{axis}",
                "mri",
                _square(sl, size),
                f"nibabel {_version('nibabel')}: nibabel/tests/data/anatomical.nii "
                f"(middle slice along axis {axis}, volume percentile min-max, cropped to the head)",
            )
        )
    return out


def _from_dipy(size: int) -> list[RealImage]:
    path = _existing(_package_dir("dipy") / "data" / "files" / "t1_coronal_slice.npy")
    x = read_array(path)
    return [
        RealImage(
            "dipy_t1_coronal",
            "mri",
            _square(_crop_foreground(np.clip(x, 0, 1)), size),
            f"dipy {_version('dipy')}: dipy/data/files/t1_coronal_slice.npy (values in [0, 1]; cropped to the head)",
        )
    ]


def _from_skimage(size: int) -> list[RealImage]:
    from skimage import data  # noqa: PLC0415 -- optional source

    ver = _version("skimage")
    ihc = data.immunohistochemistry()
    out = []
    for k, (y, x) in enumerate(((0, 0), (0, 256), (256, 0), (256, 256))):
        out.append(
            RealImage(
                f"skimage_ihc_crop{k}",
                "histology",
                _square(ihc[y : y + 256, x : x + 256], size),
                f"scikit-image {ver}: skimage.data.immunohistochemistry() crop [{y}:{y + 256}, {x}:{x + 256}]",
            )
        )
    out.append(
        RealImage(
            "skimage_retina",
            "fundus",
            _square(data.retina(), size),
            f"scikit-image {ver}: skimage.data.retina() (1411 px, Lanczos-downsized)",
        )
    )
    return out


SOURCES: dict[str, Callable[[int], list[RealImage]]] = {
    "pydicom": _from_pydicom,
    "nibabel": _from_nibabel,
    "dipy": _from_dipy,
    "skimage": _from_skimage,
}


def load_real_images(image_size: int = 64) -> tuple[list[RealImage], dict[str, str]]:
    """Every available real image at ``image_size``, and {source: why skipped} for the rest."""
    images, skipped = [], {}
    for name, loader in SOURCES.items():
        try:
            images.extend(loader(image_size))
        except (ImportError, FileNotFoundError) as err:
            skipped[name] = str(err)
            warnings.warn(f"real evaluation set: skipping {name} ({err})", stacklevel=2)
    return images, skipped


def build_real_eval_set(
    out_dir: str | os.PathLike, image_size: int = 64, seed: int = 0, overwrite: bool = False
) -> dict:
    """Write the real-image restoration test set to ``out_dir``; return a summary.

    Summary: ``{"out_dir", "jsonl", "dataset_info", "count", "counts" {task: n}, "sources"
    [packages used], "skipped" {package: reason}, "images" [names]}`` (paths absolute).
    """
    check_image_size(image_size)
    images, skipped = load_real_images(image_size)
    if not images:
        raise DataError(
            "no real medical images found: none of pydicom, nibabel, dipy, scikit-image ships its "
            f"sample files here ({skipped}); install them (pip install -r requirements-dev.txt)"
        )
    out = Path(out_dir).resolve()
    prepare_output_dir(out, overwrite, marker="test.jsonl")
    records, counts = [], {}
    for n, real in enumerate(images):
        clean_rel = f"images/{real.name}_clean.png"
        save_png(out / clean_rel, real.image)
        clean_ref = {"path": clean_rel, "height": image_size, "width": image_size}
        for t, (task, index) in enumerate(RESTORATION_TASKS):
            rng = np.random.default_rng([seed, n, t])
            degraded, body = restoration_pair(task, real.image, real.modality, rng, n + index, image_size)
            sample_id = f"real_{real.name}_{body['degrade_type']}"
            rel = f"images/{real.name}_{body['degrade_type']}.png"
            save_png(out / rel, degraded)
            records.append(
                {
                    "main_task_type": task,
                    "degrade_type": body["degrade_type"],
                    "sample_id": sample_id,
                    "input_img": [{"path": rel, "height": image_size, "width": image_size}],
                    "output_img": [clean_ref],
                    "message": body["message"],
                    "modality": real.modality,
                    "source": real.source,
                    "degrade_params": body["degrade_params"],
                }
            )
            counts[task] = counts.get(task, 0) + 1
    jsonl = out / "test.jsonl"
    write_jsonl(jsonl, records)
    info = {
        "MedicalImageEditingIterableDataset": {
            "medreal_restoration_test": {
                "data_dir": str(out),
                "jsonl_path": str(jsonl),
                "num_total_samples": len(records),
            }
        }
    }
    write_yaml(
        out / "dataset_info.yaml",
        info,
        "Real-image restoration test set (built from files shipped inside installed packages;\n"
        "see each record's 'source'). Paths are ABSOLUTE, resolved when this file was written.",
    )
    used = sorted({name for name in SOURCES if name not in skipped})
    return {
        "out_dir": str(out),
        "jsonl": str(jsonl),
        "dataset_info": str(out / "dataset_info.yaml"),
        "count": len(records),
        "counts": counts,
        "sources": used,
        "skipped": skipped,
        "images": [r.name for r in images],
    }
