"""Packing: token budgets, overflow queue, mandatory groups, weights, skips, sharding and dropout."""

import json

import numpy as np
import pytest
import yaml

from unimedvl.config import model_config
from unimedvl.data.datasets import shard_order
from unimedvl.data.loader import DataConfig
from unimedvl.data.mixing import load_mix
from unimedvl.data.packing import Packer
from unimedvl.errors import ConfigError, DataError
from unimedvl.medsynth.generator import generate_medsynth
from unimedvl.tokenizer import Tokenizer

DEBUG = model_config("debug")


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_bpe(["word " * 5, "Assessment: the CT image is noisy."], vocab_size=300)


def write_text_set(folder, sizes, name="t", bad_lines=()):
    """A text_only JSONL whose record i has sizes[i] gpt words; returns its path."""
    lines = []
    for i, size in enumerate(sizes):
        if i in bad_lines:
            lines.append("{not json")
            continue
        lines.append(
            json.dumps(
                {
                    "main_task_type": "text_only",
                    "sample_id": f"{name}{i}",
                    "message": [
                        {"from": "human", "value": f"{i}"},
                        {"from": "gpt", "value": " ".join(["word"] * size)},
                    ],
                }
            )
        )
    path = folder / f"{name}.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def make_mix(folder, entries):
    """entries: {dataset type: {dataset name: (jsonl path, extra mix keys)}}; weight 1 per dataset."""
    info, mix = {}, {}
    for dtype, datasets in entries.items():
        for name, (path, extra) in datasets.items():
            info.setdefault(dtype, {})[name] = {"jsonl_path": str(path)}
            mix.setdefault(dtype, {"dataset_names": [], **extra})["dataset_names"].append(name)
    (folder / "info.yaml").write_text(yaml.safe_dump(info))
    (folder / "mix.yaml").write_text(yaml.safe_dump(mix))
    return load_mix(folder / "mix.yaml", folder / "info.yaml", DEBUG)


def packer(mix, tokenizer, shard=0, num_shards=1, **cfg):
    defaults = dict(expected_num_tokens=100, max_num_tokens=120, max_num_tokens_per_sample=100)
    return Packer(mix, DEBUG, tokenizer, DataConfig("unused.yaml", **{**defaults, **cfg}), shard, num_shards)


def sample_ids(batch, tokenizer):
    """The human text (the record index) of each sample of a text_only batch."""
    out, text = [], batch.text_ids.tolist()
    starts = np.cumsum([0] + batch.layout.sample_lens)
    for s in starts[:-1]:
        out.append(int(tokenizer.decode(text[s + 1 : s + 1 + 3]).split("word")[0].strip() or -1))
    return out


def test_budgets_and_overflow_queue_keep_every_sample_in_order(tmp_path, tokenizer):
    # Record i: 1 + len("i") + 1 (human) + 1 + 8*? tokens; sizes chosen so packs overflow often.
    path = write_text_set(tmp_path, [5, 30, 12, 40, 3, 25, 33, 8, 14, 60, 2, 20])
    mix = make_mix(tmp_path, {"text_only": {"t": (path, {})}})
    p = packer(mix, tokenizer, expected_num_tokens=60, max_num_tokens=80, max_num_tokens_per_sample=80)
    seen, lengths = [], []
    for _ in range(8):
        batch = p.next_batch()
        assert batch.sequence_length <= 80
        lengths.append(batch.sequence_length)
        seen.extend(sample_ids(batch, tokenizer))
    assert seen[:12] == list(range(12))  # nothing lost or reordered by the overflow queue (no shuffle)
    assert seen[12:15] == [0, 1, 2]  # then the next epoch
    assert any(n < 60 for n in lengths)  # some packs were closed early by a sample that did not fit


def test_over_long_samples_are_skipped_and_counted(tmp_path, tokenizer):
    path = write_text_set(tmp_path, [5, 90, 5, 5, 95, 5])
    mix = make_mix(tmp_path, {"text_only": {"t": (path, {})}})
    p = packer(mix, tokenizer, expected_num_tokens=100, max_num_tokens=120, max_num_tokens_per_sample=40)
    batch = p.next_batch()
    assert sample_ids(batch, tokenizer)[:4] == [0, 2, 3, 5]
    assert p.stats["skipped_too_long"] >= 2 and p.stats["by_type"]["text_only"]["skipped_too_long"] >= 2
    everything_long = write_text_set(tmp_path, [90, 95], name="long")
    mix = make_mix(tmp_path, {"text_only": {"long": (everything_long, {})}})
    with pytest.raises(DataError, match="were skipped in a row.*raise max_num_tokens_per_sample"):
        packer(mix, tokenizer, max_num_tokens_per_sample=40).next_batch()


def test_bad_records_fail_with_their_line_or_are_skipped(tmp_path, tokenizer):
    path = write_text_set(tmp_path, [3, 3, 3, 3], bad_lines=(2,))
    mix = make_mix(tmp_path, {"text_only": {"t": (path, {})}})
    with pytest.raises(DataError, match=r"t\.jsonl:3: malformed JSON.*bad_record_policy='skip'"):
        for _ in range(3):
            packer(mix, tokenizer).next_batch()
    p = packer(mix, tokenizer, bad_record_policy="skip")
    ids = sample_ids(p.next_batch(), tokenizer)
    assert 2 not in ids[:3] and p.stats["skipped_bad_records"] >= 1


def test_mandatory_group_opens_every_pack_and_weights_are_followed(tmp_path, tokenizer):
    for name, n in (("a", 40), ("b", 40), ("m", 5)):
        write_text_set(tmp_path, [2] * n, name=name)
    info = {"text_only": {n: {"jsonl_path": f"{n}.jsonl"} for n in "ab"}, "vlm_sft": {"m": {"jsonl_path": "m.jsonl"}}}
    # The mandatory entry needs its own type key (flags are per entry); vlm_sft accepts text records.
    mix = {
        "text_only": {"dataset_names": ["a", "b"], "weight": {"a": 3, "b": 1}},
        "vlm_sft": {
            "dataset_names": ["m"],
            "weight": 0,
            "is_mandatory": True,
            "vit_image_transform_args": {"image_stride": 14, "max_image_size": 70, "min_image_size": 28},
        },
    }
    (tmp_path / "info.yaml").write_text(yaml.safe_dump(info))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump(mix))
    p = packer(
        load_mix(tmp_path / "mix.yaml", tmp_path / "info.yaml", DEBUG),
        tokenizer,
        expected_num_tokens=60,
        max_num_tokens=80,
        max_num_tokens_per_sample=80,
    )
    for _ in range(40):
        batch = p.next_batch()
        assert batch.sample_kinds[0] == "vlm_sft" and batch.sample_kinds.count("vlm_sft") == 1
    assert p.stats["by_type"]["vlm_sft"]["samples"] == 40 and p.stats["by_type"]["text_only"]["samples"] > 200
    # Weights 3:1 between a and b: records read per group from the cursors (epoch, position).
    a_read, b_read = (p.cursors[i][0] * 40 + p.cursors[i][1] for i in (0, 1))
    assert 2.3 < a_read / b_read < 3.9


def test_shards_are_disjoint_cover_everything_and_reshuffle(tmp_path, tokenizer):
    for n, shards in ((10, 3), (7, 4), (5, 5)):
        parts = [shard_order(n, 0, s, shards, True, [1, 2]) for s in range(shards)]
        assert sorted(np.concatenate(parts).tolist()) == list(range(n))
    assert not np.array_equal(shard_order(50, 0, 0, 1, True, 3), shard_order(50, 1, 0, 1, True, 3))
    assert np.array_equal(shard_order(50, 1, 0, 1, True, 3), shard_order(50, 1, 0, 1, True, 3))
    # Through the packer: 3 shards of 11 records, one epoch each, cover every record exactly once.
    path = write_text_set(tmp_path, [2] * 11)
    mix = make_mix(tmp_path, {"text_only": {"t": (path, {"shuffle_lines": True})}})
    seen = []
    for shard in range(3):
        p = packer(mix, tokenizer, shard=shard, num_shards=3, expected_num_tokens=1)  # one sample per pack
        size = len(range(shard, 11, 3))
        seen.extend(sample_ids(p.next_batch(), tokenizer)[0] for _ in range(size))
    assert sorted(seen) == list(range(11))
    small = write_text_set(tmp_path, [2] * 2, name="small")
    mix = make_mix(tmp_path, {"text_only": {"small": (small, {"is_mandatory": True})}})
    with pytest.raises(ConfigError, match="fewer than the 3 data shards"):
        packer(mix, tokenizer, shard=2, num_shards=3)


def test_conditional_dropout_follows_its_probability(tmp_path, tokenizer):
    generate_medsynth(tmp_path / "ms", n_train=8, n_test=0, tasks=["t2i"])
    mix = load_mix(tmp_path / "ms" / "mix.yaml", model_cfg=DEBUG)
    for prob, expected in ((1.0, 0), (0.0, 1)):
        p = packer(mix, tokenizer, expected_num_tokens=200, max_num_tokens=400, text_cond_dropout_prob=prob)
        batch = p.next_batch()
        texts_per_sample = (len(batch.text_ids) - 2 * len(batch.vae_grids)) / len(batch.sample_kinds)
        assert (texts_per_sample > 1) == bool(expected)
    p = packer(mix, tokenizer, expected_num_tokens=2000, max_num_tokens=2400, text_cond_dropout_prob=0.5)
    batch = p.next_batch()
    starts = np.cumsum([0] + batch.layout.sample_lens)[:-1]
    with_caption = sum(batch.layout.samples[i][0].mode == "causal" for i in range(len(starts)))
    assert 0.25 < with_caption / len(starts) < 0.75
