"""Sample cards of the HTML report: what the model was given, what it produced, and its own scores.

Per run and task, the first ``per_task`` successful samples of results.jsonl in file order (no
picking of good ones). A card by kind:

- image tasks (edit): input / ground truth / prediction side by side at the same displayed size,
  with PSNR / SSIM and the baseline's, the instruction and the understanding pass's text;
- text-to-image: the prompt, the reference and the generated image;
- VQA / multiple choice: the image, the question, the gold answer, the prediction, correct or not;
- reports: the image, the reference report and the generated one, with the report's ROUGE-L.

Images are embedded (base64 PNG thumbnails), so the page works from a copied folder. A question's
image is read from where the test set keeps it (``input_paths`` of the result line); results from
before that field show the text only. Without results.jsonl, ``<sample>_pred.png`` files make the
cards. Failed samples are listed with their error.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from unimedvl.fileio import read_json_lines
from unimedvl.imaging.transforms import thumbnail
from unimedvl.metrics.info import format_number

TRIPLET = ("input", "GT", "pred")
CAPTIONS = {"input": "input", "GT": "ground truth", "pred": "prediction"}
MAX_TEXT = 600  # characters of an instruction or answer shown on a card


def img_tag(png: bytes, alt: str, css_class: str = "") -> str:
    """An <img> with the PNG embedded."""
    cls = f' class="{css_class}"' if css_class else ""
    return (
        f'<img{cls} alt="{html.escape(alt)}" title="{html.escape(alt)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
    )


def thumbnail_png(image: Image.Image, max_side: int) -> bytes:
    im = thumbnail(image.convert("RGB") if image.mode not in ("L", "RGB") else image, max_side)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _file_thumbnail(path: Path, max_side: int) -> bytes | None:
    """A run's own PNG as written (its mode kept), as a thumbnail; None when missing or unreadable."""
    from unimedvl.errors import UserError
    from unimedvl.imaging.raw import read_raster

    try:
        return thumbnail_png(read_raster(path), max_side)
    except (UserError, OSError, ValueError):
        return None


def _source_thumbnail(path_spec: str, max_side: int) -> bytes | None:
    """A test-set image (PNG/JPEG/DICOM/NIfTI, ``#window=...`` fragments honoured), as a thumbnail."""
    from unimedvl.errors import UserError
    from unimedvl.imaging.medical_io import load_image

    try:
        return thumbnail_png(load_image(path_spec), max_side)
    except (UserError, OSError, ValueError):
        return None


def _task(line: Mapping[str, Any]) -> str:
    return str(line.get("task_type") or line.get("main_task_type") or "(no task type)")


def pick_samples(run_dir: Path, per_task: int) -> tuple[dict[str, list[dict]], list[dict], int]:
    """(task -> up to ``per_task`` successful result lines, failed lines, unreadable lines)."""
    img_dir = run_dir / "images" if (run_dir / "images").is_dir() else run_dir
    results, bad = read_json_lines(run_dir / "results.jsonl")
    if not results:
        results = [{"sample_id": p.name[: -len("_pred.png")]} for p in sorted(img_dir.glob("*_pred.png"))]
    chosen: dict[str, list[dict]] = {}
    failed = [r for r in results if r.get("error")]
    for r in results:
        if r.get("error") or not r.get("sample_id"):
            continue
        picked = chosen.setdefault(_task(r), [])
        if len(picked) < per_task:
            picked.append(r)
    return {t: s for t, s in sorted(chosen.items()) if s}, failed, bad


def _image_path(run_dir: Path, line: Mapping[str, Any], kind: str) -> Path:
    rel = (line.get("images") or {}).get(kind)
    if rel:
        return run_dir / rel
    img_dir = run_dir / "images" if (run_dir / "images").is_dir() else run_dir
    return img_dir / f"{line['sample_id']}_{kind}.png"


def _text(value: Any) -> str:
    text = "" if value is None else str(value)
    return html.escape(text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " ...")


def _facts(items: Sequence[tuple[str, str]]) -> str:
    """A <dl> of (term, already-escaped HTML) pairs, the empty ones left out."""
    body = "".join(f"<dt>{html.escape(k)}</dt><dd>{v}</dd>" for k, v in items if v)
    return f"<dl>{body}</dl>" if body else ""


def _figure(png: bytes | None, alt: str, caption: str) -> str:
    body = img_tag(png, alt, "sample-img") if png else "<div class='missing'>not found</div>"
    return f"<figure>{body}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _image_scores(line: Mapping[str, Any]) -> list[tuple[str, str]]:
    metrics = line.get("metrics") or {}
    out = []
    for key, label in (
        ("psnr", "PSNR"),
        ("ssim", "SSIM"),
        ("psnr_native", "PSNR (native)"),
        ("ssim_native", "SSIM (native)"),
    ):
        value = metrics.get(key, line.get(key))
        if value is None:
            continue
        base = metrics.get(f"baseline_{key}")
        shown = format_number(key, _float(value))
        if base is not None:
            shown += f" (baseline {line.get('baseline', '')} {format_number(key, _float(base))})"
        out.append((label, html.escape(shown)))
    return out


def _float(value: Any) -> Any:
    """A score as result lines hold it ("inf" for an infinite PSNR) as a number."""
    return float(value) if value in ("inf", "-inf") else value


def _verdict(correct: Any) -> str:
    if correct is None:
        return ""
    return "<span class='ok'>correct</span>" if correct else "<span class='wrong'>wrong</span>"


def sample_card(run_dir: Path, line: Mapping[str, Any], thumb: int) -> str:
    """The card of one result line (module docstring)."""
    sid = str(line["sample_id"])
    kind = line.get("kind") or ("edit" if any(_image_path(run_dir, line, k).is_file() for k in TRIPLET) else "")
    metrics = line.get("metrics") or {}
    if kind in ("edit", "t2i"):
        kinds = TRIPLET if kind == "edit" else ("GT", "pred")
        figs = "".join(
            _figure(
                _file_thumbnail(_image_path(run_dir, line, k), thumb),
                f"{sid} {k}",
                CAPTIONS[k] if kind == "edit" or k != "GT" else "reference",
            )
            for k in kinds
        )
        facts = [
            *_image_scores(line),
            ("instruction" if kind == "edit" else "prompt", _text(line.get("instruction"))),
            ("understanding pass", _text(line.get("understanding_text"))),
        ]
        return _card(sid, f"<div class='figs'>{figs}</div>" + _facts(facts), stacked=True)
    image = ""
    if line.get("input_paths"):
        image = _figure(_source_thumbnail(str(line["input_paths"][0]), thumb), f"{sid} input", "image")
    if kind == "report":
        facts = [
            ("prompt", _text(line.get("instruction"))),
            ("reference report", _text(line.get("gold"))),
            ("generated report", _text(line.get("answer"))),
            ("ROUGE-L", _rouge(line)),
        ]
    else:
        recall = metrics.get("recall")
        facts = [
            ("question", _text(line.get("instruction"))),
            ("gold answer", _text(line.get("gold"))),
            ("prediction", _text(line.get("answer"))),
            ("scored", _verdict(metrics.get("correct"))),
            ("token recall", html.escape(format_number("open_recall", recall)) if recall is not None else ""),
            ("question type", _text(line.get("question_type"))),
        ]
        if not line.get("kind"):  # a line of an older or foreign results file: show what it holds
            facts = [(k, _text(v)) for k, v in line.items() if not isinstance(v, (dict, list)) and v is not None]
    return _card(sid, f"<div class='figs'>{image}</div>" + _facts(facts))


def _rouge(line: Mapping[str, Any]) -> str:
    from unimedvl.metrics.text import rouge_l

    if not line.get("gold") or not isinstance(line.get("answer"), str):
        return ""
    return format_number("rouge_l", rouge_l([line["answer"]], [str(line["gold"])]))


def _card(sid: str, body: str, stacked: bool = False) -> str:
    """A card: the images, then (``stacked``) below or beside them the facts."""
    inner = body if stacked else f"<div class='card-body'>{body}</div>"
    return f"<div class='card'><div class='card-id'>{html.escape(sid)}</div>{inner}</div>"


def samples_html(run_dir: Path, per_task: int, thumb: int = 256) -> str:
    """The sample section of one run: cards per task, then the failed samples with their errors."""
    from unimedvl.eval.report.tables import html_table

    by_task, failed, bad = pick_samples(run_dir, per_task)
    parts = []
    if bad:
        parts.append(f"<p>{bad} unreadable line(s) in results.jsonl were skipped.</p>")
    if not by_task:
        parts.append("<p>No sample images found.</p>" if not failed else "<p>No successful sample.</p>")
    for task, lines in by_task.items():
        parts.append(f"<h4>{html.escape(task)}</h4><div class='cards'>")
        parts += [sample_card(run_dir, line, thumb) for line in lines]
        parts.append("</div>")
    if failed:
        parts.append(f"<h4>Failed samples ({len(failed)})</h4>")
        parts.append(
            html_table(["sample", "task", "error"], [[l["sample_id"], _task(l), l.get("error")] for l in failed[:200]])
        )
    return "\n".join(parts)


__all__ = ["img_tag", "pick_samples", "sample_card", "samples_html", "thumbnail_png"]
