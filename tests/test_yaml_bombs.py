"""YAML bombs (issue 28, item 3): alias expansion and nesting are bounded wherever the project reads
YAML (config.load_yaml: run configs, mixes, dataset_info, model configs), and no message formats an
unbounded user value."""

import time

import pytest
import yaml

from unimedvl.config import MAX_YAML_NODES, load_yaml
from unimedvl.data.mixing import check_mix
from unimedvl.errors import ConfigError, capped


def laughs(levels: int, width: int = 10) -> str:
    """The classic: level k is a list of `width` aliases of level k-1 (width**levels values in all)."""
    lines = ['l0: &l0 ["lol"]']
    for k in range(1, levels + 1):
        lines.append(f"l{k}: &l{k} [" + ", ".join([f"*l{k - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("key", ["dataset_names", "weight", "shuffle_seed"])
def test_a_billion_laughs_mix_is_refused_at_once_naming_the_file(tmp_path, key):
    mix = tmp_path / "mix.yaml"
    mix.write_text(laughs(9) + f"vlm_sft:\n  {key}: *l9\n")  # 10^9 values
    start = time.perf_counter()
    mix_obj, problems = check_mix(mix)
    assert mix_obj is None and len(problems) == 1
    assert str(mix) in problems[0] and "expand to more than" in problems[0]
    assert time.perf_counter() - start < 10  # before: hung with memory growing


def test_cycles_and_deep_nesting_are_one_line(tmp_path):
    cyclic = tmp_path / "cyclic.yaml"
    cyclic.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match="expand to more than"):
        load_yaml(cyclic)
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(deep)
    assert str(deep) in str(err.value) and "\n" not in str(err.value)


def test_ordinary_aliases_still_load_as_before(tmp_path):
    text = "base: &b {lr: 0.001, steps: 10}\nrun: {<<: *b, steps: 20}\nlist: [*b, *b]\n" + laughs(3)
    path = tmp_path / "ok.yaml"
    path.write_text(text)
    assert load_yaml(path) == yaml.safe_load(text)


def test_a_large_value_below_the_limit_gives_a_short_message(tmp_path):
    levels = 5  # 10^5 values: loads, but must never be printed whole
    assert 10**levels < MAX_YAML_NODES
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        laughs(levels) + f"vlm_sft:\n  shuffle_seed: *l{levels}\n  weight: *l{levels}\n  dataset_names: *l{levels}\n"
    )
    start = time.perf_counter()
    _, problems = check_mix(mix)
    assert problems and all(len(p) < 600 for p in problems), [len(p) for p in problems]
    assert time.perf_counter() - start < 10


def test_capped_is_bounded_in_size_and_time():
    bomb: list = ["lol"]
    for _ in range(30):
        bomb = [bomb] * 10  # 10^30 values if walked
    start = time.perf_counter()
    text = capped(bomb)
    assert len(text) <= 200 and time.perf_counter() - start < 1
    assert capped("x" * 1000, 20) == "x" * 17 + "..." and capped("ab", quote=True) == "'ab'"
    assert capped(ValueError("boom")) == "boom"
