"""DataConfig: what the training data is and how it is packed, and the interface of a training loader.

Its own small module so that the loader, the packer and the trainer's config all read one definition
(the trainer's data flags are these fields).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from unimedvl.config import from_dict
from unimedvl.errors import ConfigError, quoted
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS

if TYPE_CHECKING:  # the trainer's --help reads DataConfig without loading torch
    from unimedvl.imaging.transforms import ImageTransform
    from unimedvl.models.packed_batch import PackedBatch


@dataclass
class DataConfig:
    """What the training data is and how it is packed."""

    dataset_config_file: str = ""  # the YAML data mix (tier 3), keyed by dataset type
    dataset_info_file: str | None = (
        None  # dataset info YAML (tier 2); None: the mix key dataset_info, else beside the mix
    )
    expected_num_tokens: int = 32768  # a pack is emitted once it holds this many tokens
    max_num_tokens: int = 36864  # a pack never holds more tokens than this
    max_num_tokens_per_sample: int = 16384  # longer samples are skipped (and counted)
    text_cond_dropout_prob: float = 0.1  # drop the text conditions of a generation sample
    vit_cond_dropout_prob: float = 0.3  # drop the ViT copies of a generation sample's input images
    vae_cond_dropout_prob: float = 0.3  # drop the clean VAE copies of a generation sample's input images
    num_workers: int = 0  # DataLoader worker processes per rank (0: load in the training process)
    seed: int = 0  # seeds shuffling, weighted sampling and dropout
    bad_record_policy: str = "fail"  # "fail": stop at a bad record; "skip": skip it and count it
    ce_weighting: str = "token"  # "token" or "sqrt_split" (each text split weighs 1/sqrt(length))
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS  # refuse images over this many pixels (16384 x 16384), read from the header before decoding
    confine_data_dir: bool = False  # refuse records whose images lie outside their dataset's data_dir ('..', absolute paths, symlinks); False: warn once

    def __post_init__(self) -> None:
        for name in ("expected_num_tokens", "max_num_tokens", "max_num_tokens_per_sample"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"data.{name} must be positive, got {getattr(self, name)}")
        if self.expected_num_tokens > self.max_num_tokens:
            raise ConfigError(
                f"data.expected_num_tokens={self.expected_num_tokens} exceeds data.max_num_tokens="
                f"{self.max_num_tokens}; lower it or raise max_num_tokens"
            )
        if self.max_num_tokens_per_sample > self.max_num_tokens:
            raise ConfigError(
                f"data.max_num_tokens_per_sample={self.max_num_tokens_per_sample} exceeds "
                f"data.max_num_tokens={self.max_num_tokens}: such a sample could never be packed"
            )
        for name in ("text_cond_dropout_prob", "vit_cond_dropout_prob", "vae_cond_dropout_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"data.{name} must be within [0, 1], got {getattr(self, name)}")
        if (
            isinstance(self.max_image_pixels, bool)
            or not isinstance(self.max_image_pixels, int)
            or self.max_image_pixels < 1
        ):
            raise ConfigError(
                f"data.max_image_pixels={quoted(self.max_image_pixels)} must be a positive number of pixels"
            )
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.bad_record_policy not in ("fail", "skip"):
            raise ConfigError(f"data.bad_record_policy={quoted(self.bad_record_policy)}; choose 'fail' or 'skip'")
        if self.ce_weighting not in ("token", "sqrt_split"):
            raise ConfigError(f"data.ce_weighting={quoted(self.ce_weighting)}; choose 'token' or 'sqrt_split'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> DataConfig:
        return from_dict(cls, data, source)


@runtime_checkable
class TrainingLoader(Protocol):
    """What the trainer needs of a loader (``build_loader`` returns one; ``TrainConfig.loader`` may name others)."""

    def __iter__(self) -> Iterator[PackedBatch]: ...

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position in the stream; the factory's ``state=`` argument resumes from it."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from a :meth:`state_dict` of this loader."""
        ...

    @property
    def stats(self) -> dict[str, Any]:
        """Counters over the consumed batches (samples, tokens, skipped, by_type)."""
        ...

    def has_generation_data(self) -> bool:
        """Some sampled data trains image generation (flow loss)."""
        ...

    def has_understanding_data(self) -> bool:
        """Some sampled data trains text (cross-entropy)."""
        ...

    def image_transforms(self) -> tuple[ImageTransform | None, ImageTransform | None]:
        """The (VAE, ViT) transforms the data is fed with: what the trained checkpoint should be fed
        at inference (None where the data has no such images, or the loader does not know)."""
        ...
