"""Check a dataset before training: every record parses and every image opens and fits the model.

``unimedvl validate-data FILE.jsonl --data-dir DIR`` (:mod:`unimedvl.commands.validate_data`) reads
every line and every image header and prints counts per task type, image-size ranges and the problems found (``path:line: message``);
it exits with status 1 when anything is wrong. :func:`validate_sources` takes a list of
(jsonl_path, data_dir) pairs. ``unimedvl validate-data MIX.yaml [--dataset-info INFO.yaml]``
(:func:`validate_mix`) first checks the mix itself (types, names, weights, ranges, files, the
model's paths and tables), then every dataset of every group with that group's own transforms
and dataset type (a record the type cannot train, e.g. a t2i record without an output image, is
a problem too).

Size limits: after the VAE transform an image is ``H/16 x W/16`` latent tokens and must fit the
latent position table (``max_latent_size`` per side); after the ViT transform ``H/14 x W/14``
patches must fit ``vit_max_num_patch_per_side``. Every image is checked against every transform
given (an input image may go through both paths, depending on the dataset type).

Images are checked from their headers (fast); ``decode=True`` (``--decode``) decodes every image
fully, which also catches truncated pixel data. A width/height declared in the record that
differs from the file is a problem too: token budgets are planned from the declared sizes. An
image over ``max_image_pixels`` (default 16384 x 16384) is a problem, found from its header.

Token budget (:class:`TokenLimit`, on by default in the CLI): a record whose text alone (JSONL) or
whole planned sample (mix: text + images after the transforms, as the packer counts) exceeds the
limit is a problem: training would skip it, ``eval`` fails it and ``ask`` refuses it. A huge text is
bounded without being tokenised (:meth:`~unimedvl.tokenizer.Tokenizer.min_tokens`).

Confinement: an image that lies outside the record's data folder (``..``, an absolute path, a
symbolic link) is a warning, or a problem with ``confine_data_dir`` (``--confine-data-dir``).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from unimedvl.data.record_checks import image_refs, read_checked
from unimedvl.data.records import Problem, Record, _file_problem, outside_data_dir
from unimedvl.data.token_budget import TokenLimit, sample_token_check
from unimedvl.errors import DataError, UserError
from unimedvl.imaging.medical_io import image_size, load_array
from unimedvl.imaging.pixel_limit import DEFAULT_MAX_IMAGE_PIXELS
from unimedvl.imaging.transforms import ImageTransform

if TYPE_CHECKING:
    from unimedvl.config import ModelConfig


_LABELS = {"vae": "VAE", "vit": "ViT"}


@dataclass
class SizeRange:
    """Smallest and largest width and height seen."""

    count: int = 0
    min_width: int = 0
    max_width: int = 0
    min_height: int = 0
    max_height: int = 0

    def add(self, width: int, height: int) -> None:
        if self.count == 0:
            self.min_width = self.max_width = width
            self.min_height = self.max_height = height
        else:
            self.min_width, self.max_width = min(self.min_width, width), max(self.max_width, width)
            self.min_height, self.max_height = min(self.min_height, height), max(self.max_height, height)
        self.count += 1

    def __str__(self) -> str:
        if not self.count:
            return "none"
        return (
            f"{self.count} image(s), width {self.min_width}..{self.max_width}, "
            f"height {self.min_height}..{self.max_height}"
        )


@dataclass
class Report:
    """What :func:`validate_jsonl` found: counts, size ranges and problems."""

    files: list[str] = field(default_factory=list)  # JSONL files read
    records: int = 0  # records that parsed
    bad_records: int = 0  # lines that did not parse (each has a problem)
    task_counts: Counter = field(default_factory=Counter)  # task_type -> records
    image_sizes: dict[str, SizeRange] = field(default_factory=dict)  # "input"/"output" -> stored sizes
    grid_sizes: dict[str, SizeRange] = field(default_factory=dict)  # "vae"/"vit" -> patch grid (cols, rows)
    problems: list[Problem] = field(default_factory=list)  # everything wrong, in reading order
    warnings: list[Problem] = field(default_factory=list)  # legal but suspect (images outside the data folder)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self, max_problems: int | None = 50) -> str:
        """A human-readable summary (what the CLI prints)."""
        lines = [f"files: {len(self.files)}", f"records: {self.records} read, {self.bad_records} lines unreadable"]
        for task, count in sorted(self.task_counts.items()):
            lines.append(f"  {task}: {count}")
        for role in ("input", "output"):
            if role in self.image_sizes:
                lines.append(f"{role} images: {self.image_sizes[role]}")
        for key, name in (("vae", "latent tokens"), ("vit", "patches")):
            grid = self.grid_sizes.get(key)
            if grid and grid.count:
                lines.append(
                    f"after the {_LABELS[key]} transform: {name} per side, "
                    f"cols {grid.min_width}..{grid.max_width}, rows {grid.min_height}..{grid.max_height}"
                )
        lines += _listing("warnings", self.warnings, max_problems)
        lines += _listing("problems", self.problems, max_problems) or ["no problems found"]
        return "\n".join(lines)


def _listing(title: str, items: list[Problem], most: int | None) -> list[str]:
    """``title: N`` and the first ``most`` items of each file, one per line ([] when there are none)."""
    if not items:
        return []
    lines = [f"{title}: {len(items)}"]
    by_file: dict[str, list[Problem]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    for path, found in by_file.items():
        shown = found if most is None else found[:most]
        lines += [f"  {p}" for p in shown]
        if len(shown) < len(found):
            lines.append(f"  ... and {len(found) - len(shown)} more in {path} (--max-problems 0 lists all)")
    return lines


class _Checker:
    """Validates records against image files and size limits, caching one header read per image."""

    def __init__(
        self,
        report: Report,
        transforms: dict[str, tuple[ImageTransform, int | None]],
        decode: bool = False,
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        tokens: TokenLimit | None = None,
        confine_data_dir: bool = False,
    ) -> None:
        self.report = report
        self.decode = decode
        self.transforms = transforms  # "vae"/"vit" -> (transform, max patches per side or None)
        self.max_image_pixels = max_image_pixels
        self.tokens = tokens
        self.confine_data_dir = confine_data_dir
        self.data_dir: str | None = None  # the folder of the file being read (for confinement)
        self.sizes: dict[str, tuple[int, int] | str] = {}
        self.ids: dict[str, str] = {}  # sample_id -> "path:line" of first use
        self.record_check: Callable[[Record], None] | None = None  # raises DataError when the type cannot use it
        self.token_check: Callable[[Record], None] | None = None  # a mix's planned-sample count (else the text's)

    def size(self, path_spec: str) -> tuple[int, int] | str:
        if path_spec not in self.sizes:
            try:
                if self.decode:
                    pixels = load_array(path_spec, max_image_pixels=self.max_image_pixels).pixels
                    self.sizes[path_spec] = (pixels.shape[1], pixels.shape[0])
                else:
                    self.sizes[path_spec] = image_size(path_spec, max_image_pixels=self.max_image_pixels)
            except DataError as err:
                self.sizes[path_spec] = str(err)
        return self.sizes[path_spec]

    def known_size(self, path_spec: str) -> tuple[int, int]:
        """The image's size for token counting; DataError (reported by the image checks) when unreadable."""
        size = self.size(path_spec)
        if isinstance(size, str):
            raise DataError(size)
        return size

    def check_tokens(self, record: Record, path: str, line: int) -> None:
        if self.token_check is not None:
            try:
                self.token_check(record)
            except DataError as err:
                self.problem(path, line, str(err))
            return
        if self.tokens is None:
            return
        count, exact = self.tokens.text_tokens(record)
        if count > self.tokens.limit:
            self.problem(
                path,
                line,
                f"the record's text alone is {'' if exact else 'at least '}{count} tokens, over "
                f"{self.tokens.name}: training skips it, eval fails it and ask refuses it; shorten it",
            )

    def check_confinement(self, record: Record, path: str, line: int) -> None:
        if self.data_dir is None:
            return
        for ref in record.images:
            if outside_data_dir(ref.path, self.data_dir):
                text = (
                    f"image {ref.rel_path} lies outside the data folder {self.data_dir} (through '..', an "
                    "absolute path or a symbolic link)"
                )
                if self.confine_data_dir:
                    self.problem(path, line, f"{text}; move it inside (or leave out --confine-data-dir)")
                else:
                    self.report.warnings.append(Problem(path, line, f"{text}; --confine-data-dir refuses it"))

    def record(self, record: Record, path: str, line: int) -> None:
        report = self.report
        report.records += 1
        report.task_counts[record.task_type] += 1
        where = self.ids.setdefault(record.sample_id, record.source)
        if where != record.source:
            self.problem(
                path,
                line,
                f"sample_id {record.sample_id!r} repeats the one at {where}; "
                "ids must be unique for resumable evaluation",
            )
        if self.record_check is not None:
            try:
                self.record_check(record)
            except DataError as err:
                self.problem(path, line, str(err))
        self.check_confinement(record, path, line)
        self.check_tokens(record, path, line)
        for role, images in (("input", record.input_images), ("output", record.output_images)):
            for number, ref in enumerate(images, start=1):
                self.image(role, number, ref, path, line)

    def image(self, role: str, number: int, ref, path: str, line: int) -> None:
        """Check one image of a record: it opens, its declared size, its fit after the transforms."""
        size = self.size(ref.path)
        label = f"{role} image {number} ({ref.rel_path})"
        if isinstance(size, str):
            self.problem(path, line, f"{label}: {size}")
            return
        width, height = size
        self.report.image_sizes.setdefault(role, SizeRange()).add(width, height)
        if (ref.width or width, ref.height or height) != (width, height):
            self.problem(
                path,
                line,
                f"{label}: record says {ref.width or '?'}x{ref.height or '?'} (width x height) "
                f"but the file is {width}x{height}; fix the record's width/height",
            )
        self.fit(path, line, label, width, height)

    def fit(self, path: str, line: int, label: str, width: int, height: int) -> None:
        for key, (transform, max_side) in self.transforms.items():
            rows, cols = transform.grid_size(width, height)
            self.report.grid_sizes.setdefault(key, SizeRange()).add(cols, rows)
            if max_side is not None and max(rows, cols) > max_side:
                new_w, new_h = cols * transform.image_stride, rows * transform.image_stride
                table = "max_latent_size" if key == "vae" else "vit_max_num_patch_per_side"
                self.problem(
                    path,
                    line,
                    f"{label}: {width}x{height} becomes {new_w}x{new_h} after the {_LABELS[key]} transform, "
                    f"{cols}x{rows} patches, beyond {table}={max_side}; lower max_image_size to "
                    f"<= {max_side * transform.image_stride} or raise {table}",
                )

    def problem(self, path: str, line: int | None, message: str) -> None:
        self.report.problems.append(Problem(path, line, message))


def validate_sources(
    sources: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str] | None]],
    vae_transform: ImageTransform | None = None,
    vit_transform: ImageTransform | None = None,
    max_latent_side: int | None = None,
    max_vit_side: int | None = None,
    decode: bool = False,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    tokens: TokenLimit | None = None,
    confine_data_dir: bool = False,
) -> Report:
    """Validate several (jsonl_path, data_dir) pairs into one report (sample ids unique across all).

    ``max_latent_side`` / ``max_vit_side`` are position-table sides in patches (the model's
    ``max_latent_size`` and ``vit_max_num_patch_per_side``); each needs its transform. ``tokens``:
    the text budget (None: not checked); ``confine_data_dir``: images outside a file's data folder
    are problems instead of warnings.
    """
    transforms: dict[str, tuple[ImageTransform, int | None]] = {}
    for key, transform, side in (("vae", vae_transform, max_latent_side), ("vit", vit_transform, max_vit_side)):
        if side is not None and transform is None:
            raise UserError(f"a {key} position-table limit was given without the {key} transform it applies to")
        if transform is not None:
            transforms[key] = (transform, side)
    report = Report()
    checker = _Checker(report, transforms, decode, max_image_pixels, tokens, confine_data_dir)
    _read_sources(report, checker, sources)
    return report


def _read_sources(
    report: Report, checker: _Checker, sources: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str] | None]]
) -> None:
    """Read every record of ``sources`` into ``report`` through ``checker``."""
    for jsonl_path, data_dir in sources:
        spath = os.fspath(jsonl_path)
        report.files.append(spath)
        records_before, problems_before = report.records, len(report.problems)
        checker.data_dir = os.path.abspath(
            os.fspath(data_dir) if data_dir is not None else os.path.dirname(spath) or "."
        )
        unreadable = _file_problem(spath)
        if unreadable:
            checker.problem(spath, None, unreadable)
            continue
        # Every problem of every record (not only the first of each): one run shows them all.
        for line, obj, record, problems in read_checked(spath, data_dir):
            for message in problems:
                checker.problem(spath, line, message)
            if record is not None:
                checker.record(record, spath, line)
                continue
            report.bad_records += 1
            for role, number, ref in image_refs(obj, checker.data_dir if data_dir is None else data_dir):
                checker.image(role, number, ref, spath, line)  # missing files show now, not after the fix
        if report.records == records_before and len(report.problems) == problems_before:
            checker.problem(spath, None, "no records (the file is empty)")


def validate_jsonl(
    path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
    vae_transform: ImageTransform | None = None,
    vit_transform: ImageTransform | None = None,
    max_latent_side: int | None = None,
    max_vit_side: int | None = None,
    decode: bool = False,
    **options,
) -> Report:
    """Validate one JSONL file: every record and every image header (``data_dir``: default its folder);
    ``options``: those of :func:`validate_sources` (max_image_pixels, tokens, confine_data_dir)."""
    return validate_sources(
        [(path, data_dir)], vae_transform, vit_transform, max_latent_side, max_vit_side, decode, **options
    )


def validate_mix(
    mix_path: str | os.PathLike[str],
    info_path: str | os.PathLike[str] | None = None,
    model: ModelConfig | None = None,
    decode: bool = False,
    size_check: bool = True,
    *,
    max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
    tokens: TokenLimit | None = None,
    confine_data_dir: bool = False,
) -> Report:
    """Validate a YAML mix: the mix itself, then every group's datasets with its transforms and type.

    ``model`` (default: the release config) decides which paths and position tables apply;
    ``size_check=False`` skips the transform / position-table check of the images; ``tokens``
    counts each record's whole planned sample (text and images) as the packer does.
    """
    from unimedvl.config import ModelConfig
    from unimedvl.data.mixing import check_mix
    from unimedvl.data.plans import ModelPaths

    model = model or ModelConfig()
    report = Report()
    mix, problems = check_mix(mix_path, info_path, model)
    if mix is None:
        for message in problems:  # each is "file: what is wrong"
            path, _, rest = message.partition(": ")
            report.problems.append(Problem(path, None, rest))
        return report
    checker = _Checker(report, {}, decode, max_image_pixels, tokens, confine_data_dir)
    paths = ModelPaths.of(model)
    for group in mix.groups:
        checker.transforms = {}
        if size_check and group.plan.uses_vae(paths):
            checker.transforms["vae"] = (group.vae_transform, model.max_latent_size)
        if size_check and group.plan.uses_vit(paths):
            side = None if model.interpolate_pos else model.vit_max_num_patch_per_side
            checker.transforms["vit"] = (group.vit_transform, side)
        checker.record_check = _plan_check(group.plan, paths)
        checker.token_check = (
            None if tokens is None else sample_token_check(group, paths, model, tokens, checker.known_size)
        )
        sources = [(d.info.jsonl_path, d.info.data_dir) for d in group.datasets]
        _read_sources(report, checker, [s for s in sources if s[0] not in report.files])
    return report


def _plan_check(plan, paths) -> Callable[[Record], None]:
    """A record check that plans the record as its dataset type would (DataError when it cannot)."""
    from unimedvl.data.plans import Drops

    def check(record: Record) -> None:
        plan.plan(record, Drops(), paths)

    return check
