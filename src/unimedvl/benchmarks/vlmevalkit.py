"""VLMEvalKit-style TSV files (GMAI-MMBench, OmniMedVQA and MMMU TSVs, PathVQA_VAL, ...).

Fact sheet section 5 (VLMEvalKit's ``docs/en/Development.md``, ``vlmeval/dataset/image_base.py``
and ``image_mcq.py``): one row per question with ``index`` (unique), ``image`` (base64), optional
``image_path``, ``question``, optional ``hint``, option columns named by one uppercase letter
(``A``, ``B``, ... ; an empty cell = no such option), ``answer`` (the letter; absent on TEST
splits, whose questions are read but cannot be scored), ``category``, ``l2-category`` and an
optional ``split``. Conventions carried over:

* an ``image`` cell of at most 64 characters is the ``index`` of another row whose image this
  row reuses (resolved by :mod:`unimedvl.benchmarks.convert`, forward references included);
* a cell holding a list (``['...', '...']``) is a multi-image question;
* a row without an image but with ``image_path`` names a file, looked up beside the TSV and in
  ``images/<tsv stem>/`` (VLMEvalKit's decoded-image folder);
* empty cells and pandas' default NA spellings ("nan", "NA", "None", ...) count as absent, since
  VLMEvalKit reads TSVs with pandas' defaults;
* rows without any image are dropped (VLMEvalKit's ``skip_noimg``), each reported.

A folder argument reads every ``*.tsv`` in it (e.g. the 11 parts of GMAI-MMBench_TEST) in
natural name order; an LMUData folder's ``X_local.tsv`` copy is skipped when ``X.tsv`` is there.
VLMEvalKit's medical TSVs reach the paper table by their names (:func:`paper_column_of`:
OmniMedVQA, SLAKE_EN_TEST, PathVQA_VAL / _TEST, VQA_RAD, GMAI-MMBench). ``--split`` also matches
one word of a TSV-named split (``--split val`` reads ``GMAI-MMBench_VAL``). ``--split`` selects rows by the ``split`` column; without it every row is
read and the run label is the TSV's name (``vlmevalkit-GMAI-MMBench_VAL``).

GMAI-MMBench (``gmai-mmbench``): the same reader, with VLMEvalKit's extra breakdowns by
``clinical VQA task``, ``department`` and ``perceptual granularity`` (matched case-insensitively;
the full header of the release TSV is unconfirmed). The UniMedVL paper's GMAI-MMBench column is
most likely the VAL split (``GMAI-MMBench_VAL.tsv``), also unconfirmed.
"""

from __future__ import annotations

import ast
import base64
import binascii
import csv
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from unimedvl.benchmarks.items import MULTIPLE_CHOICE, BenchmarkItem, ImageSource, letter_of, yes_no_rule
from unimedvl.benchmarks.prompts import MULTIPLE_CHOICE as MC_PROMPT
from unimedvl.benchmarks.reader import Reader, ReadOptions
from unimedvl.data.records import Problem

REFERENCE_MAX_CHARS = 64  # VLMEvalKit: a shorter image cell is another row's index
# pandas.read_csv's default NA strings (VLMEvalKit reads TSVs with them): such cells are absent.
NA_STRINGS = frozenset(
    {
        "",
        "#N/A",
        "#N/A N/A",
        "#NA",
        "-1.#IND",
        "-1.#QNAN",
        "-NaN",
        "-nan",
        "1.#IND",
        "1.#QNAN",
        "<NA>",
        "N/A",
        "NA",
        "NULL",
        "NaN",
        "None",
        "n/a",
        "nan",
        "null",
    }
)
_OPTION = re.compile(r"^[A-Z]$")


def _cell(row: dict[str, str], key: str) -> str | None:
    value = row.get(key)
    if value is None:
        return None
    value = value.strip()
    return None if value in NA_STRINGS else value


def tsv_files(path: Path) -> list[Path]:
    """The TSV file, or a folder's TSVs in natural order (part_2 before part_10)."""
    if path.is_file():
        return [path] if path.suffix.lower() == ".tsv" else []

    def key(p: Path) -> list:
        return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]

    files = [p for p in path.glob("*.tsv") if p.is_file()]
    names = {p.name for p in files}
    # LMUData keeps X_local.tsv (images moved to files) beside X.tsv: the same questions, read once (X.tsv).
    files = [p for p in files if not (p.stem.endswith("_local") and f"{p.stem[:-6]}.tsv" in names)]
    return sorted(files, key=key)


def _natural_stem(files: list[Path]) -> str:
    """One name for a set of TSV parts: the common prefix of their stems, without a trailing part number."""
    stems = [f.stem for f in files]
    prefix = stems[0]
    for stem in stems[1:]:
        while not stem.startswith(prefix):
            prefix = prefix[:-1]
    return re.sub(r"[_\-. ]*(part)?[_\-. ]*\d*$", "", prefix, flags=re.IGNORECASE) or stems[0]


# VLMEvalKit's names of the medical TSVs (LMUData/<NAME>.tsv) -> the UniMedVL paper's column.
PAPER_COLUMNS = (
    ("omnimedvqa", "OmniMedVQA"),
    ("slake", "SLAKE"),
    ("pathvqa", "PathVQA"),
    ("vqarad", "VQA-RAD"),
    ("gmai", "GMAI-MMBench"),
)


def paper_column_of(name: str) -> str | None:
    """The paper column of a VLMEvalKit dataset name (``OmniMedVQA``, ``SLAKE_EN_TEST``, ``PathVQA_VAL``,
    ``VQA_RAD_TEST``, ``GMAI-MMBench_VAL``, ``GMAI_mm_bench_TEST_part_3`` ...), None for any other."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return next((column for prefix, column in PAPER_COLUMNS if prefix in key), None)


def split_matches(wanted: str, row_split: str) -> bool:
    """A ``--split`` names a row's split: equal (case aside), or one word of it (``val`` in ``GMAI-MMBench_VAL``)."""
    words = [w for w in re.split(r"[_\-. ]+", row_split.lower()) if w]
    return wanted.lower() == row_split.lower() or wanted.lower() in words


def parse_image_cell(cell: str) -> list[str]:
    """The image entries of a cell: one string, or the elements of a list literal (multi-image)."""
    if cell.startswith("[") and cell.endswith("]"):
        try:
            value = ast.literal_eval(cell)
        except (ValueError, SyntaxError):
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return [v.strip() for v in value]
    return [cell]


def decode_image_entry(entry: str) -> ImageSource:
    """One image entry: a short one is a row index, a long one base64 (ValueError when it is not)."""
    if len(entry) <= REFERENCE_MAX_CHARS:
        return ImageSource(ref=entry)
    try:
        return ImageSource(data=base64.b64decode("".join(entry.split()), validate=True))
    except (binascii.Error, ValueError):
        raise ValueError("the image cell is not valid base64") from None


class VlmEvalKit(Reader):
    """Any VLMEvalKit-style TSV."""

    name = "vlmevalkit"
    expects = "a VLMEvalKit TSV (index, question, A..E, answer, category, image) or a folder of them"
    default_split = None
    prompt = MC_PROMPT

    def layout(self, path: Path) -> str | None:
        files = tsv_files(path)
        if not files:
            return None
        try:
            with files[0].open(encoding="utf-8-sig", newline="") as handle:
                header = handle.readline().rstrip("\r\n").split("\t")
        except (OSError, UnicodeDecodeError):
            return None
        return "tsv" if "index" in header and "question" in header else None

    def splits(self, path: Path, layout: str) -> list[str]:
        found: set[str] = set()
        for file, _, row, _ in self._rows(path, []):
            found.add(_cell(row, "split") or file.stem)
        return sorted(found)

    def label(self, path: Path, split: str | None, options: ReadOptions) -> str:
        files = tsv_files(path)
        return f"{self.name}-{split or (_natural_stem(files) if files else 'all')}"

    def column(self, path: Path) -> str | None:
        """The paper column VLMEvalKit's file name says (OmniMedVQA, SLAKE_EN_TEST, PathVQA_VAL, ...)."""
        files = tsv_files(path)
        return paper_column_of(_natural_stem(files)) if files else None

    def _rows(self, path: Path, problems: list[Problem]) -> Iterator[tuple[Path, list[str], dict[str, str], int]]:
        """(file, header, row as {column: cell}, line number) for every data row."""
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # base64 image cells are megabytes long
        for file in tsv_files(path):
            try:
                with file.open(encoding="utf-8-sig", newline="") as handle:
                    reader = csv.reader(handle, delimiter="\t")
                    header = next(reader, None)
                    if not header or "index" not in header or "question" not in header:
                        problems.append(
                            Problem(
                                str(file),
                                1,
                                f"not a VLMEvalKit TSV: the header has no index and "
                                f"question columns (header: {', '.join((header or [])[:10])})",
                            )
                        )
                        continue
                    for cells in reader:
                        if len(cells) != len(header):
                            problems.append(
                                Problem(str(file), reader.line_num, f"{len(cells)} cells for {len(header)} columns")
                            )
                            continue
                        yield file, header, dict(zip(header, cells)), reader.line_num
            except (OSError, UnicodeDecodeError, csv.Error) as err:
                problems.append(Problem(str(file), None, f"cannot read as a TSV ({type(err).__name__}: {err})"))

    def items(
        self, path: Path, layout: str, split: str | None, options: ReadOptions, problems: list[Problem]
    ) -> Iterator[BenchmarkItem]:
        for file, header, row, line in self._rows(path, problems):
            row_split = _cell(row, "split") or file.stem
            if split is not None and not split_matches(split, row_split):
                continue
            item = self._item(file, header, row, line, row_split, problems)
            if item is not None:
                yield item

    def _item(
        self, file: Path, header: list[str], row: dict[str, str], line: int, split: str, problems: list[Problem]
    ) -> BenchmarkItem | None:
        def problem(message: str) -> None:
            problems.append(Problem(str(file), line, message))

        index, question = _cell(row, "index"), _cell(row, "question")
        if index is None or question is None:
            problem("empty index or question")
            return None
        images: list[ImageSource] = []
        cell = _cell(row, "image")
        try:
            images = [decode_image_entry(e) for e in parse_image_cell(cell)] if cell else []
        except ValueError as err:
            problem(f"index {index}: {err}")
            return None
        if not images:
            names = parse_image_cell(_cell(row, "image_path") or "")
            images = [ImageSource(path=_image_file(file, n)) for n in names if n]
        if not images:
            problem(f"index {index}: no image (empty image and image_path cells); dropped, as VLMEvalKit does")
            return None
        options = {c: v for c in sorted(c for c in header if _OPTION.match(c)) if (v := _cell(row, c)) is not None}
        answer = _cell(row, "answer")
        if options:
            kind = MULTIPLE_CHOICE
            if answer is not None:
                letter = letter_of(answer, options)
                if letter is None:
                    problem(f"index {index}: answer {answer!r} is none of the options {', '.join(options)}")
                    return None
                answer = letter
        else:
            kind = yes_no_rule(answer)  # an ImageShortQA TSV (no options), e.g. VLMEvalKit's PathVQA_VAL
        lower = {k.lower(): k for k in header}
        fields = {name: _cell(row, lower[name]) for name in ("l2-category", *self.breakdowns) if name in lower}
        return BenchmarkItem(
            benchmark=self.name,
            split=split,
            question_id=index,
            question=question,
            answer=answer,
            answer_type=kind,
            images=tuple(images),
            source=f"{file}:{line}",
            options=options or None,
            hint=_cell(row, "hint"),
            category=_cell(row, "category"),
            modality=_cell(row, lower["modality"]) if "modality" in lower else None,
            fields=fields,
        )


def _image_file(tsv: Path, name: str) -> str:
    """Where an ``image_path`` name is: beside the TSV, else in images/<tsv stem>/ (VLMEvalKit's folder)."""
    beside = tsv.parent / name
    if beside.is_file():
        return str(beside)
    return str(tsv.parent / "images" / tsv.stem / name)


class GmaiMmBench(VlmEvalKit):
    """GMAI-MMBench TSV (VAL or the TEST parts): VLMEvalKit's reader plus GMAI's breakdowns."""

    name = "gmai-mmbench"
    expects = "GMAI-MMBench_VAL.tsv (or a folder with the GMAI_mm_bench_TEST_part_N.tsv files)"
    paper_column = "GMAI-MMBench"
    breakdowns = ("clinical vqa task", "department", "perceptual granularity")

    def column(self, path: Path) -> str | None:
        return self.paper_column

    def label(self, path: Path, split: str | None, options: ReadOptions) -> str:
        """``gmai-mmbench-val`` / ``gmai-mmbench-test`` from the file name when no split is chosen."""
        files = tsv_files(path)
        found = re.search(r"(?<![A-Za-z])(VAL|TEST)(?![A-Za-z])", files[0].stem, re.IGNORECASE) if files else None
        if split is None and found:
            return f"{self.name}-{found.group(1).lower()}"
        return super().label(path, split, options)
