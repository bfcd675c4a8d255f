"""Example inputs for the app, made at startup in a temporary folder.

Two kinds, so that every tab has something to try with one click:

- MedSynth scenes (:mod:`unimedvl.medsynth.images`) rendered for the tasks they illustrate:
  a CT with a lesion, a chest X-ray, a noisy MRI, a 4x low-resolution CT, an H&E slide, a T1 MRI;
- real files that ship inside installed packages (spec environment.md), copied as they are so the
  DICOM and NIfTI readers are exercised: pydicom's CT and MR slices and a 30-frame ultrasound
  cine, nibabel's brain MRI volume, dipy's T1 slice (.npy). A package that is missing is skipped.

Nothing is downloaded and nothing is written into the repository.
"""

from __future__ import annotations

import importlib.util
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from unimedvl.medsynth import degradations as degrade
from unimedvl.medsynth import images as si
from unimedvl.medsynth.generator import caption_text
from unimedvl.medsynth.writers import save_png

SIZE = 256  # side of the synthetic images (pixels)


@dataclass(frozen=True)
class ExampleFile:
    """One example input: the file, what it shows, and the Ask task / Edit preset it suits."""

    path: Path
    label: str
    ask_task: str | None = None  # key of presets.ASK_TASKS
    edit_preset: str | None = None  # key of presets.EDIT_PRESETS


def _package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package, located without importing it; None if absent."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    return path if path.is_file() else None


def _synthetic(out: Path, seed: int) -> list[ExampleFile]:
    def scene(modality: str, n_lesions: int, k: int) -> si.Scene:
        return si.make_scene(modality, SIZE, np.random.default_rng([seed, k]), n_lesions)

    files: list[ExampleFile] = []

    def save(name: str, image: np.ndarray, label: str, ask: str | None = None, edit: str | None = None) -> None:
        path = out / name
        save_png(path, image)
        files.append(ExampleFile(path, label, ask, edit))

    ct = scene("ct", 1, 0)
    save("medsynth_ct_lesion.png", si.render(ct), "MedSynth CT with a lesion", ask="Visual question answering")
    xray = scene("x-ray", 1, 1)
    save(
        "medsynth_cxr.png",
        si.render(xray),
        "MedSynth chest X-ray",
        ask="Report writing",
        edit="Counterfactual (remove lesion)",
    )
    mri = si.render(scene("mri", 0, 2))
    noisy = degrade.gaussian_noise(mri, 0.08, np.random.default_rng([seed, 3]))
    save("medsynth_mri_noisy.png", noisy, "MedSynth MRI with noise", ask="Image quality assessment", edit="Denoising")
    save(
        "medsynth_ct_lowres_x4.png",
        degrade.down_up(si.render(scene("ct", 0, 4)), 4),
        "MedSynth CT at 1/4 resolution",
        edit="4x super-resolution",
    )
    he, _ = si.render_stain_pair(scene("histology", 2, 5))
    save("medsynth_he.png", he, "MedSynth H&E slide", edit="H&E -> IHC (virtual staining)")
    save("medsynth_mri_t1.png", mri, "MedSynth T1 brain MRI", edit="Modality synthesis (T1 -> T2)")
    return files


# (package, path inside it, file name in the example folder, label, ask task, edit preset)
_REAL = (
    (
        "pydicom",
        ("data", "test_files", "CT_small.dcm"),
        "pydicom_CT_small.dcm",
        "Real CT slice (DICOM)",
        "Visual question answering",
        "Denoising",
    ),
    (
        "pydicom",
        ("data", "test_files", "MR_small.dcm"),
        "pydicom_MR_small.dcm",
        "Real MR slice (DICOM)",
        "Image quality assessment",
        "4x super-resolution",
    ),
    (
        "pydicom",
        ("data", "test_files", "examples_ybr_color.dcm"),
        "pydicom_US_30frames.dcm",
        "Real ultrasound cine, 30 frames (DICOM)",
        "Visual question answering",
        None,
    ),
    (
        "nibabel",
        ("tests", "data", "anatomical.nii"),
        "nibabel_anatomical.nii",
        "Real brain MRI volume (NIfTI)",
        "Report writing",
        "Modality synthesis (T1 -> T2)",
    ),
    (
        "dipy",
        ("data", "files", "t1_coronal_slice.npy"),
        "dipy_t1_coronal.npy",
        "Real T1 brain slice (.npy)",
        "Image quality assessment",
        "4x super-resolution",
    ),
)


def _real(out: Path) -> list[ExampleFile]:
    files = []
    for package, parts, name, label, ask, edit in _REAL:
        source = _package_file(package, *parts)
        if source is None:
            continue
        shutil.copyfile(source, out / name)
        files.append(ExampleFile(out / name, label, ask, edit))
    return files


def build_examples(out_dir: str | Path, seed: int = 0) -> list[ExampleFile]:
    """Write the example files into ``out_dir`` (created) and return them, synthetic ones first."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _synthetic(out, seed) + _real(out)


def generate_prompts(seed: int = 0) -> list[str]:
    """Text-to-image prompts in MedSynth's caption style, one per modality."""
    prompts = []
    for k, modality in enumerate(si.MODALITIES):
        rng = np.random.default_rng([seed, 100 + k])
        n = int(rng.integers(0, 3))
        lesions = si.make_scene(modality, 64, rng, n).lesions
        prompts.append(caption_text(modality, lesions))
    return prompts
