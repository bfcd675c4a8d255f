"""The public loader: config checks, batches, stats, rank sharding, and exact resume (with and without workers)."""

import itertools
import json

import pytest
import torch
import yaml

from unimedvl.config import model_config
from unimedvl.data.loader import DataConfig, build_loader
from unimedvl.errors import ConfigError, DataError
from unimedvl.medsynth.generator import generate_medsynth
from unimedvl.models.packed_batch import PackedBatch
from unimedvl.tokenizer import Tokenizer

DEBUG = model_config("debug")


@pytest.fixture(scope="module")
def medsynth(tmp_path_factory):
    out = tmp_path_factory.mktemp("medsynth")
    generate_medsynth(out, n_train=27, n_test=0, seed=3)
    return out


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer.train_bpe(["Assessment: CT image with mild noise. Remove the lesion."], vocab_size=300)


def data_cfg(medsynth, **kw):
    base = dict(expected_num_tokens=400, max_num_tokens=600, max_num_tokens_per_sample=300, seed=5)
    return DataConfig(str(medsynth / "mix.yaml"), **{**base, **kw})


def take(loader, n):
    return list(itertools.islice(iter(loader), n))


def assert_same_batches(a: list[PackedBatch], b: list[PackedBatch]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.sample_kinds == y.sample_kinds
        assert x.layout.sample_lens == y.layout.sample_lens
        for name in ("position_ids", "text_ids", "vit_tokens", "vae_noised", "ce_labels", "ce_weights"):
            assert torch.equal(getattr(x, name), getattr(y, name)), name
        assert len(x.vae_inputs) == len(y.vae_inputs)
        assert all(torch.equal(u, v) for u, v in zip(x.vae_inputs, y.vae_inputs))


def test_data_config_checks():
    with pytest.raises(ConfigError, match="expected_num_tokens=5000 exceeds data.max_num_tokens=4000"):
        DataConfig("m.yaml", expected_num_tokens=5000, max_num_tokens=4000)
    with pytest.raises(ConfigError, match="max_num_tokens_per_sample=9000 exceeds"):
        DataConfig("m.yaml", expected_num_tokens=100, max_num_tokens=8000, max_num_tokens_per_sample=9000)
    with pytest.raises(ConfigError, match="vit_cond_dropout_prob must be within"):
        DataConfig("m.yaml", vit_cond_dropout_prob=1.5)
    with pytest.raises(ConfigError, match="choose 'fail' or 'skip'"):
        DataConfig("m.yaml", bad_record_policy="ignore")
    assert DataConfig.from_dict({"dataset_config_file": "m.yaml", "num_workers": 2}).num_workers == 2


def test_batches_stats_and_trainer_checks(medsynth, tokenizer):
    loader = build_loader(data_cfg(medsynth), DEBUG, tokenizer)
    batches = take(loader, 6)  # enough for every dataset type of the mix to come up
    kinds = set(itertools.chain.from_iterable(b.sample_kinds for b in batches))
    assert kinds == {
        "vlm_sft",
        "MedicalImageEditingIterableDataset",
        "CounterfactualMedicalIterableDataset_ver1",
        "t2i",
    }
    assert all(b.sequence_length <= 600 for b in batches) and any(b.sequence_length >= 400 for b in batches)
    stats = loader.stats
    assert stats["batches"] == 6 and stats["samples"] == sum(len(b.sample_kinds) for b in batches)
    assert stats["tokens"] == sum(b.sequence_length for b in batches)
    assert sum(v["samples"] for v in stats["by_type"].values()) == stats["samples"]
    assert loader.has_generation_data() and loader.has_understanding_data()
    json.dumps(loader.state_dict())
    # Understanding-only model: t2i cannot train it (refused up front) ...
    und_only = model_config("debug")
    und_only.visual_gen = False
    with pytest.raises(ConfigError, match="'t2i' needs the generation path"):
        build_loader(data_cfg(medsynth), und_only, tokenizer)
    # ... editing adapts: no VAE split reaches a model without the generation path.
    mix = yaml.safe_load((medsynth / "mix.yaml").read_text())
    del mix["t2i"]
    (medsynth / "und_mix.yaml").write_text(yaml.safe_dump(mix))
    cfg = DataConfig(
        str(medsynth / "und_mix.yaml"),
        dataset_info_file=str(medsynth / "dataset_info.yaml"),
        expected_num_tokens=400,
        max_num_tokens=600,
        max_num_tokens_per_sample=300,
    )
    loader = build_loader(cfg, und_only, tokenizer)
    batch = take(loader, 1)[0]
    assert not batch.vae_inputs and batch.vit_token_lens and batch.num_ce_tokens
    assert loader.has_understanding_data() and not loader.has_generation_data()


def test_resume_gives_the_uninterrupted_stream(medsynth, tokenizer):
    cfg = data_cfg(medsynth)
    reference = take(build_loader(cfg, DEBUG, tokenizer), 13)
    first = build_loader(cfg, DEBUG, tokenizer)
    # Stop where a sample waits in the overflow queue (the hard case to resume); a second iter()
    # continues where the first stopped, so batches are taken one at a time.
    for k in range(1, 11):
        assert_same_batches(take(first, 1), reference[k - 1 : k])
        state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
        worker = state["workers"]["0"]
        if worker["pending"]:
            break
    assert state["batches"] == k and worker["pending"], "no state in 10 batches held a sample in the overflow queue"
    assert any(g["epoch"] > 0 for g in worker["groups"].values()), "some group should be past its first epoch"
    resumed = build_loader(cfg, DEBUG, tokenizer, state=state)
    assert_same_batches(take(resumed, 3), reference[k : k + 3])
    assert resumed.stats["batches"] == k + 3
    assert_same_batches(take(first, 3), reference[k : k + 3])
    with pytest.raises(ConfigError, match="saved with num_workers=0 but this run has num_workers=2"):
        build_loader(data_cfg(medsynth, num_workers=2), DEBUG, tokenizer, state=state)
    with pytest.raises(ConfigError, match="saved with seed=5 but this run has seed=6"):
        build_loader(data_cfg(medsynth, seed=6), DEBUG, tokenizer, state=state)


def test_resume_with_two_workers(medsynth, tokenizer):
    cfg = data_cfg(medsynth, num_workers=2)
    reference = take(build_loader(cfg, DEBUG, tokenizer), 8)
    first = build_loader(cfg, DEBUG, tokenizer)
    assert_same_batches(take(first, 5), reference[:5])  # odd: the worker that delivers next is worker 1
    state = json.loads(json.dumps(first.state_dict()))
    assert state["next_worker"] == 1 and set(state["workers"]) == {"0", "1"}
    assert_same_batches(take(build_loader(cfg, DEBUG, tokenizer, state=state), 3), reference[5:])
    # The two workers read disjoint records: worker batches differ from the single-process stream.
    single = take(build_loader(data_cfg(medsynth), DEBUG, tokenizer), 2)
    assert not all(torch.equal(a.text_ids, b.text_ids) for a, b in zip(single, reference[:2]))


def test_ranks_read_disjoint_records(tmp_path, tokenizer):
    lines = [
        json.dumps(
            {
                "main_task_type": "text_only",
                "message": [{"from": "human", "value": str(i)}, {"from": "gpt", "value": "ok"}],
            }
        )
        for i in range(10)
    ]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "dataset_info.yaml").write_text(yaml.safe_dump({"text_only": {"t": {"jsonl_path": "t.jsonl"}}}))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"text_only": {"dataset_names": ["t"], "shuffle_lines": True}}))
    cfg = DataConfig(str(tmp_path / "mix.yaml"), expected_num_tokens=1, max_num_tokens=64, max_num_tokens_per_sample=64)
    seen = []
    for rank in range(3):  # 10 records over 3 ranks: 4 + 3 + 3, nothing dropped
        per_rank = 4 if rank == 0 else 3
        for batch in take(build_loader(cfg, DEBUG, tokenizer, rank=rank, world_size=3), per_rank):
            seen.append(tokenizer.decode(batch.text_ids[1:3].tolist()).split("ok")[0])
    assert sorted(seen, key=int) == [str(i) for i in range(10)]
    with pytest.raises(ConfigError, match="rank=3 is not within world_size=3"):
        build_loader(cfg, DEBUG, tokenizer, rank=3, world_size=3)


def test_a_bad_record_in_a_worker_is_one_clear_error(tmp_path, tokenizer):
    good = {"main_task_type": "text_only", "message": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    (tmp_path / "t.jsonl").write_text(json.dumps(good) + "\n" + '{"message": 3}\n')
    (tmp_path / "dataset_info.yaml").write_text(yaml.safe_dump({"text_only": {"t": {"jsonl_path": "t.jsonl"}}}))
    (tmp_path / "mix.yaml").write_text(yaml.safe_dump({"text_only": {"dataset_names": ["t"]}}))
    cfg = DataConfig(
        str(tmp_path / "mix.yaml"),
        expected_num_tokens=64,
        max_num_tokens=64,
        max_num_tokens_per_sample=64,
        num_workers=1,
    )
    with pytest.raises(DataError) as err:
        take(build_loader(cfg, DEBUG, tokenizer), 1)
    message = str(err.value)
    assert message.startswith(f"{tmp_path / 't.jsonl'}:2: 'main_task_type' must be") and "\n" not in message
