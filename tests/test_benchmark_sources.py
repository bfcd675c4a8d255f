"""Paper columns from any source: VLMEvalKit's medical TSVs by name, GMAI splits by a word, the scored run wins."""

import csv
from pathlib import Path

import pytest

import benchmark_fixtures as F
from unimedvl.benchmarks.convert import convert_benchmark, open_benchmark
from unimedvl.benchmarks.vlmevalkit import paper_column_of
from unimedvl.eval.report.benchmark_table import paper_table
from unimedvl.eval.statistics.stats_csv import StatsEntry


@pytest.mark.parametrize(
    "name, column",
    [
        ("OmniMedVQA", "OmniMedVQA"),
        ("SLAKE_EN_TEST", "SLAKE"),
        ("PathVQA_VAL", "PathVQA"),
        ("PathVQA_TEST", "PathVQA"),
        ("VQA_RAD_TEST", "VQA-RAD"),
        ("GMAI-MMBench_VAL", "GMAI-MMBench"),
        ("GMAI_mm_bench_TEST_part_3", "GMAI-MMBench"),
        ("MMBench_DEV_EN", None),
    ],
)
def test_vlmevalkit_names_map_to_paper_columns(name, column):
    assert paper_column_of(name) == column


def _without_split_column(tsv: Path) -> Path:
    with tsv.open(encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    keep = [i for i, h in enumerate(rows[0]) if h != "split"]
    with tsv.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, delimiter="\t", lineterminator="\n").writerows([[r[i] for i in keep] for r in rows])
    return tsv


def test_a_vlmevalkit_tsv_reaches_its_paper_column(tmp_path):
    tsv = _without_split_column(F.vlmevalkit_tsv(tmp_path / "LMUData" / "OmniMedVQA.tsv", broken_row=False))
    conv = convert_benchmark(open_benchmark("vlmevalkit", tsv))
    assert {r["paper_column"] for r in conv.records} == {"OmniMedVQA"}


def test_gmai_split_by_a_word_of_the_tsv_name(tmp_path):
    tsv = _without_split_column(F.vlmevalkit_tsv(tmp_path / "GMAI-MMBench_VAL.tsv", broken_row=False))
    source = open_benchmark("gmai-mmbench", tsv, "val")
    conv = convert_benchmark(source)
    assert len(conv.records) == 5 and source.label == "gmai-mmbench-val"
    assert not convert_benchmark(open_benchmark("gmai-mmbench", tsv, "test")).records


def _entry(split, accuracy, column="GMAI-MMBench"):
    overall = {"accuracy": {"value": accuracy, "ci95": [accuracy - 0.1, accuracy + 0.1], "n": 10}} if accuracy else {}
    block = {"paper_column": column, "split": split, "overall": overall}
    return StatsEntry(Path("x"), "ckpt", f"gmai-mmbench-{split}", {"benchmark": block})


@pytest.mark.parametrize("order", [0, 1])
def test_the_scored_val_run_fills_the_gmai_cell_whatever_the_order(order):
    entries = [_entry("GMAI-MMBench_TEST", None), _entry("GMAI-MMBench_VAL", 0.5)]
    header, rows = paper_table(entries if order else entries[::-1])
    cell = rows[0][header.index("GMAI-MMBench")]
    assert cell.startswith("50.00 [40.0, 60.0] (n=10)")
