"""What the web app offers: its settings and the task templates.

Plain data, no gradio: the UI (``ui.py``) and the tests read the same tables. The guidance the panels
start from is the loaded checkpoint's (its inference_config.json presets: ``Backend.panel_values``), as
in ``edit``, ``api`` and ``eval``; ``EDITING`` and ``TEXT_TO_IMAGE`` (the release's) stay importable from here.
The limits the app shares with the HTTP API are :mod:`unimedvl.defaults`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from unimedvl.defaults import (
    MAX_NEW_TOKENS,
    SERVER_HOST,
    SERVER_MAX_IMAGE_PIXELS,
    SERVER_MAX_UPLOAD_MB,
    SERVER_QUEUE_SIZE,
)
from unimedvl.errors import ConfigError
from unimedvl.guidance import EDITING, RENORM_TYPES, TEXT_TO_IMAGE, GuidanceConfig
from unimedvl.imaging.formats import UPLOAD_SUFFIXES as ALLOWED_EXTENSIONS  # uploads: the only file types read
from unimedvl.imaging.medical_io import WINDOW_MODES, WINDOW_PRESETS

# Environment variable that overrides the default number of timesteps (tests, slow CPUs).
STEPS_ENV = "UNIMEDVL_APP_NUM_TIMESTEPS"

# Window dropdown: the formats' own rule first, then CT presets (HU), then the data-driven modes.
WINDOW_CHOICES = ["auto", *WINDOW_PRESETS, *(m for m in WINDOW_MODES if m != "auto")]

# Ask tab: task -> question template (the user may edit the question before asking).
ASK_TASKS: dict[str, str] = {
    "Visual question answering": "Is there a lesion in this image? If so, where is it?",
    "Report writing": "Write a radiology report for this image with Findings and Impression sections.",
    "Image quality assessment": (
        "Assess the quality of this image: name each degradation (noise, blur, low resolution, motion or "
        "other artifacts) and rate its severity as mild, moderate or severe."
    ),
}


@dataclass(frozen=True)
class EditPreset:
    """One medical editing task: the instruction it fills in and its guidance defaults."""

    instruction: str
    guidance: GuidanceConfig | None = None  # None: the checkpoint's editing preset (release: the spec's editing values)


# Edit tab presets (spec medical.md section 1 task types). All use the checkpoint's editing preset
# (the release's: the spec's cfg_text 4.0, cfg_img 2.0, interval [0, 1], text_channel renorm, shift 3.0,
# 50 steps, strength 1; a demo checkpoint's: the settings its report was evaluated with).
EDIT_PRESETS: dict[str, EditPreset] = {
    "4x super-resolution": EditPreset("Increase the resolution of this image 4x."),
    "Denoising": EditPreset("Remove the noise from this image."),
    "H&E -> IHC (virtual staining)": EditPreset(
        "Translate this H&E-stained image into the corresponding IHC (DAB) stain."
    ),
    "Modality synthesis (T1 -> T2)": EditPreset(
        "Synthesize the T2-weighted MRI image from this T1-weighted MRI image."
    ),
    "Counterfactual (remove lesion)": EditPreset(
        "Generate a counterfactual version of this image with the lesion removed, then explain the change."
    ),
}

GENERATE_PROMPT = "An axial chest CT image with one lesion in the left lung."


def default_steps() -> int | None:
    """Timesteps shown by default: ``UNIMEDVL_APP_NUM_TIMESTEPS`` if set, else None (the checkpoint's presets)."""
    raw = os.environ.get(STEPS_ENV, "").strip()
    if not raw:
        return None
    try:
        steps = int(raw)
    except ValueError:
        raise ConfigError(f"{STEPS_ENV}={raw!r} must be an integer number of timesteps (e.g. 50)") from None
    if steps < 2:
        raise ConfigError(f"{STEPS_ENV}={steps} must be at least 2")
    return steps


@dataclass
class AppSettings:
    """How the app is built and served (``unimedvl serve`` flags)."""

    host: str = SERVER_HOST  # interface to bind; 0.0.0.0 exposes the app to the network
    port: int | None = 7860  # None: gradio picks a free port from 7860 on
    auth: tuple[str, str] | None = None  # (user, password) required to open the page
    max_upload_mb: float = SERVER_MAX_UPLOAD_MB  # uploads above this size are refused by the server
    concurrency: int = 1  # model calls running at once (the rest wait in the queue)
    queue_size: int | None = SERVER_QUEUE_SIZE  # requests waiting at most; more are refused with a message
    num_timesteps: int | None = None  # default steps in the Advanced panels; None: default_steps(), else the presets
    image_size: int | None = None  # default text-to-image side; None: the model's default size
    max_image_pixels: int = SERVER_MAX_IMAGE_PIXELS  # uploads whose image has more pixels are refused before decoding
    max_new_tokens: int = MAX_NEW_TOKENS  # default answer length limit
    examples: bool = True  # build the example images at startup
    title: str = "UniMedVL"

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError(f"concurrency={self.concurrency} must be at least 1")
        if not self.max_upload_mb > 0:
            raise ConfigError(f"max_upload_mb={self.max_upload_mb} must be positive")
        if self.num_timesteps is None:
            self.num_timesteps = default_steps()
        if self.num_timesteps is not None and self.num_timesteps < 2:
            raise ConfigError(f"num_timesteps={self.num_timesteps} must be at least 2")


def parse_auth(text: str) -> tuple[str, str]:
    """``USER:PASS`` -> (user, password); the password may itself contain ':'."""
    user, sep, password = text.partition(":")
    if not sep or not user or not password:
        raise ConfigError("--auth must look like USER:PASSWORD (both non-empty)")
    return user, password


__all__ = [
    "ALLOWED_EXTENSIONS",
    "ASK_TASKS",
    "AppSettings",
    "EDIT_PRESETS",
    "EDITING",
    "EditPreset",
    "GENERATE_PROMPT",
    "RENORM_TYPES",
    "STEPS_ENV",
    "TEXT_TO_IMAGE",
    "WINDOW_CHOICES",
    "default_steps",
    "parse_auth",
]
