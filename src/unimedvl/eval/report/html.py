"""The HTML report page: one self-contained file that fits a 1400 px window.

Sections: the preface (e.g. the demo's goals, the standard-benchmark table), training losses,
per split the results, the differences from the baseline and between checkpoints
(:mod:`unimedvl.eval.report.tables`), the charts (:mod:`unimedvl.eval.report.charts`), provenance,
and per run the sample cards and failed samples (:mod:`unimedvl.eval.report.samples`). Everything,
images included, is inside the file. Wide tables scroll inside their own box; the page itself
never scrolls sideways.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from unimedvl.eval.report.samples import img_tag, samples_html
from unimedvl.eval.report.tables import (
    baseline_table,
    by_split,
    comparison_table,
    data_note,
    html_table,
    provenance_table,
    results_table,
)
from unimedvl.eval.statistics.stats_csv import StatsEntry

CSS = """
*{box-sizing:border-box}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;padding:16px 24px;max-width:1400px;
  color:#1d1d1f;line-height:1.4}
h1{font-size:24px}h2{font-size:20px;border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
h3{font-size:16px;margin-top:20px}h4{font-size:14px;margin:14px 0 6px}
p.note{color:#555;font-size:13px;max-width:60em}
.table-box{width:fit-content;max-width:100%;overflow-x:auto;margin-bottom:12px;border:1px solid #e3e3e3}
table{border-collapse:collapse;font-size:12.5px}
td,th{border:1px solid #d4d4d4;padding:3px 8px;text-align:left;vertical-align:top;white-space:nowrap}
th{background:#f2f2f2;position:sticky;top:0}
td{font-variant-numeric:tabular-nums}
img{max-width:100%}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts img{max-width:100%;height:auto;border:1px solid #eee}
.cards{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
.card{border:1px solid #ddd;border-radius:6px;padding:8px;max-width:100%;background:#fafafa}
.card-id{font-size:11px;color:#666;margin-bottom:4px;overflow-wrap:anywhere}
.card-body{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
.card-body dl{width:420px;max-width:100%}
.figs{display:flex;flex-wrap:wrap;gap:8px}
figure{margin:0}figcaption{font-size:11px;text-align:center;color:#444}
img.sample-img{width:200px;height:200px;object-fit:contain;image-rendering:pixelated;background:#000}
.missing{width:200px;height:200px;background:#eee;display:flex;align-items:center;justify-content:center;
  font-size:11px;color:#666}
dl{font-size:12.5px;margin:6px 0 0}dt{font-weight:600;margin-top:4px}
dd{margin:0 0 2px 0;white-space:pre-wrap;overflow-wrap:anywhere}
.ok{color:#0a7a2f;font-weight:600}.wrong{color:#b3261e;font-weight:600}
.path{font-family:monospace;font-size:12px;overflow-wrap:anywhere;color:#444}
.wrap td{white-space:normal;overflow-wrap:anywhere;min-width:9em;max-width:28em}
details{margin:8px 0}summary{cursor:pointer;font-weight:600;font-size:15px;margin:10px 0}
"""


INTRO = (
    "Every value is a mean over the test items with its 95% percentile-bootstrap interval and n; each metric "
    "sits next to its baseline on the same items (identity / bicubic for images, the training split's majority "
    "answer per question type for VQA, or the test set's own, named as an upper bound, chance for multiple choice, a constant report for report generation). Differences are "
    "paired over items."
)


def _section(title: str, body: str, level: int = 2) -> str:
    return f"<h{level}>{html.escape(title)}</h{level}>{body}"


def _details(title: str, body: str, opened: bool = False) -> str:
    """A section the reader unfolds (long tables that support, rather than state, the results)."""
    return f"<details{' open' if opened else ''}><summary>{html.escape(title)}</summary>{body}</details>"


def build_page(
    entries: Sequence[StatsEntry],
    charts: Mapping[str, bytes],
    comparisons: Mapping[str, Any],
    samples_per_task: int = 3,
    thumb_size: int = 256,
    loss_png: bytes | None = None,
    preface: Sequence[tuple[str, str]] = (),
) -> str:
    """The report page (module docstring). ``comparisons``: split -> compare_split result (or None);
    ``preface``: (title, trusted HTML) sections placed first."""
    splits = by_split(entries)
    head = (
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>UniMedVL evaluation</title>"
        f"<style>{CSS}</style></head><body><h1>UniMedVL evaluation</h1>"
    )
    intro = (
        f"<p class='note'>Generated {datetime.now().isoformat(timespec='seconds')} from {len(entries)} "
        f"statistics.json file(s), {len(splits)} split(s). {INTRO}</p>"
    )
    parts = [head + intro]
    parts += [_section(title, body) for title, body in preface]
    if loss_png:
        parts.append(_section("Training", img_tag(loss_png, "loss curves")))
    for split, runs in splits.items():
        parts.append(f"<h2>Split: {html.escape(split)}</h2>")
        if data_note(runs):
            parts.append(f"<p class='note'><b>{html.escape(data_note(runs))}</b></p>")
        parts.append(_section("Results", html_table(*results_table(runs)), 3))
        comparison = comparisons.get(split)
        if comparison and comparison["rows"]:
            parts.append(
                _details(
                    f"Checkpoints compared with {comparison['reference']} (paired, same items)",
                    html_table(*comparison_table(comparison)),
                    opened=True,
                )
            )
        header, rows = baseline_table(runs)
        if rows:
            parts.append(
                _details("Against the baseline (paired: model - baseline on the same items)", html_table(header, rows))
            )
    curves = {k: v for k, v in charts.items() if k.startswith("curve_")}
    bars = {k: v for k, v in charts.items() if not k.startswith("curve_")}
    if curves:
        parts.append(
            _section(
                "Over training",
                "<div class='charts'>" + "".join(img_tag(png, name) for name, png in curves.items()) + "</div>",
            )
        )
    if bars:
        parts.append(
            _section(
                "Charts", "<div class='charts'>" + "".join(img_tag(png, name) for name, png in bars.items()) + "</div>"
            )
        )
    parts.append(_section("Provenance", html_table(*provenance_table(entries), css_class="wrap")))
    parts.append(
        "<h2>Samples</h2><p class='note'>The first samples of each task in file order, with their own scores.</p>"
    )
    for e in entries:
        run_dir = e.path.parent
        parts.append(f"<h3>{html.escape(e.label)}</h3><p class='path'>{html.escape(str(run_dir))}</p>")
        parts.append(samples_html(run_dir, samples_per_task, thumb_size))
    parts.append("</body></html>")
    return "\n".join(parts)


__all__ = ["CSS", "build_page"]
