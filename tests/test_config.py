import pytest

from unimedvl.config import (
    LLMConfig,
    ModelConfig,
    VAEConfig,
    ViTConfig,
    load_model_config,
    model_config,
    save_yaml,
)
from unimedvl.errors import ConfigError


@pytest.mark.parametrize("size", ["debug", "demo", "small", "bagel-7b-mot"])
def test_yaml_round_trip(size, tmp_path):
    cfg = model_config(size)
    path = tmp_path / "m.yaml"
    save_yaml(cfg, path)
    assert load_model_config(path) == cfg


def test_release_numbers():
    cfg = model_config("bagel-7b-mot")
    assert (cfg.llm.hidden_size, cfg.llm.intermediate_size, cfg.llm.num_hidden_layers) == (3584, 18944, 28)
    assert (cfg.llm.num_attention_heads, cfg.llm.num_key_value_heads, cfg.llm.head_dim) == (28, 4, 128)
    assert cfg.llm.vocab_size == 152064 and cfg.llm.rope_theta == 1e6 and cfg.llm.qk_norm
    assert cfg.llm.layer_module == "Qwen2MoTDecoderLayer" and not cfg.llm.tie_word_embeddings
    assert (cfg.vit.hidden_size, cfg.vit.intermediate_size, cfg.vit.num_hidden_layers) == (1152, 4304, 26)
    assert cfg.vit.num_patches_per_side == 70 and cfg.vit_max_num_patch_per_side == 70
    assert cfg.vae.ch_mult == (1, 2, 4, 4) and cfg.vae.z_channels == 16 and cfg.vae.downsample == 8
    assert cfg.patch_latent_dim == 64 and cfg.max_latent_size == 64 and cfg.vae_image_stride == 16


def test_shipped_yaml_mirror_named_sizes():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs" / "models"
    for size in ("debug", "demo", "small", "bagel-7b-mot"):
        assert load_model_config(root / f"{size}.yaml") == model_config(size)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: LLMConfig(hidden_size=100, num_attention_heads=3), "not divisible"),
        (lambda: LLMConfig(num_attention_heads=28, num_key_value_heads=5), "must divide"),
        (lambda: LLMConfig(layer_module="Foo"), "Qwen2MoTDecoderLayer"),
        (lambda: ViTConfig(hidden_size=100, num_attention_heads=3), "not divisible"),
        (lambda: VAEConfig(ch=48), "multiple of 32"),
        (lambda: ModelConfig(attn_backend="cuda"), "sdpa"),
    ],
)
def test_validation_messages_say_what_to_change(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_yaml_errors_name_file_and_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm:\n  hidden_size: [1, 2\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_model_config(bad)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("llm:\n  hiden_size: 64\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml: unknown key\(s\) llm.hiden_size"):
        load_model_config(unknown)
    typed = tmp_path / "typed.yaml"
    typed.write_text("llm:\n  hidden_size: wide\n")
    with pytest.raises(ConfigError, match=r"llm.hidden_size must be an integer"):
        load_model_config(typed)
    with pytest.raises(ConfigError, match="unknown model size 'huge'"):
        load_model_config("huge")


def test_size_key_as_base(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("size: debug\nllm:\n  num_hidden_layers: 3\n")
    cfg = load_model_config(path)
    assert cfg.llm.num_hidden_layers == 3 and cfg.llm.hidden_size == model_config("debug").llm.hidden_size


def test_field_docs_reads_one_line_and_formatter_wrapped_comments():
    from dataclasses import dataclass

    from unimedvl.config import field_docs

    @dataclass
    class Options:
        short: int = 1  # a short field
        # longer than 120 columns: ruff format wraps it as it wraps such fields in the config modules
        wrapped: str | None = (
            None  # a field whose line is longer than the formatter's 120 columns, so ruff format wraps it
        )
        undocumented: int = 2

    WRAPPED_DOC = "a field whose line is longer than the formatter's 120 columns, so ruff format wraps it"
    assert field_docs(Options) == {"short": "a short field", "wrapped": WRAPPED_DOC}
