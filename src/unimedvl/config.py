"""Typed configuration for the model: language model, vision encoder, VAE, and the unified model.

Configs are data: every field has a default and a one-line doc, validation happens in
``__post_init__`` with messages that say what to change, and the named sizes (``debug``,
``small``, ``bagel-7b-mot``) are entries in a table, not copies of code. Run and data configs
(training, generation) live beside the code that uses them and reuse the YAML helpers here.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from unimedvl.errors import ConfigError, quoted

T = TypeVar("T")

LAYER_MODULES = ("Qwen2DecoderLayer", "Qwen2MoTDecoderLayer", "Qwen2MoEDecoderLayer")
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu", "silu")
ATTN_BACKENDS = ("auto", "sdpa", "flex", "flash")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


@dataclass
class LLMConfig:
    """Qwen2-shaped decoder with optional Mixture-of-Transformers experts."""

    vocab_size: int = 152064  # rows of the token embedding and lm_head
    hidden_size: int = 3584  # model width
    intermediate_size: int = 18944  # SiLU-gated MLP width
    num_hidden_layers: int = 28  # decoder layers
    num_attention_heads: int = 28  # query heads
    num_key_value_heads: int = 4  # key/value heads (GQA); must divide num_attention_heads
    head_dim: int = 0  # per-head width; 0 means hidden_size // num_attention_heads
    rope_theta: float = 1_000_000.0  # RoPE base frequency
    rms_norm_eps: float = 1e-6  # epsilon of every RMSNorm
    max_position_embeddings: int = 32768  # longest RoPE position the model was trained for
    qk_norm: bool = True  # per-head RMSNorm on queries and keys (release: true)
    attention_bias: bool = True  # bias on q/k/v projections (Qwen2: true)
    tie_word_embeddings: bool = False  # share embed_tokens and lm_head weights
    layer_module: str = "Qwen2MoTDecoderLayer"  # Qwen2DecoderLayer | Qwen2MoTDecoderLayer | Qwen2MoEDecoderLayer
    hidden_act: str = "silu"  # MLP activation
    initializer_range: float = 0.02  # std of the normal init of fresh weights

    def __post_init__(self) -> None:
        if self.head_dim == 0:
            _check(
                self.hidden_size % self.num_attention_heads == 0,
                f"llm.hidden_size={self.hidden_size} is not divisible by llm.num_attention_heads="
                f"{self.num_attention_heads}: change one of them or set llm.head_dim explicitly",
            )
            self.head_dim = self.hidden_size // self.num_attention_heads
        _check(
            self.num_attention_heads % self.num_key_value_heads == 0,
            f"llm.num_key_value_heads={self.num_key_value_heads} must divide llm.num_attention_heads="
            f"{self.num_attention_heads} (grouped-query attention)",
        )
        _check(self.head_dim % 2 == 0, f"llm.head_dim={self.head_dim} must be even for RoPE")
        _check(
            self.layer_module in LAYER_MODULES,
            f"llm.layer_module={quoted(self.layer_module)} is unknown; choose one of {', '.join(LAYER_MODULES)}",
        )
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers"):
            _check(getattr(self, name) > 0, f"llm.{name} must be positive, got {getattr(self, name)}")

    @property
    def has_gen_expert(self) -> bool:
        """True when layers carry a second (generation) expert."""
        return self.layer_module != "Qwen2DecoderLayer"


@dataclass
class ViTConfig:
    """SigLIP NaViT vision encoder (native aspect ratio, variable patch count)."""

    hidden_size: int = 1152  # encoder width
    intermediate_size: int = 4304  # MLP width
    num_attention_heads: int = 16  # attention heads
    num_hidden_layers: int = 26  # layers actually built (release config says 27; the last is dropped)
    patch_size: int = 14  # square patch side in pixels
    num_channels: int = 3  # input channels
    image_size: int = 980  # side of the learned position table in pixels (70 patches * 14)
    layer_norm_eps: float = 1e-6  # LayerNorm epsilon
    hidden_act: str = "gelu_pytorch_tanh"  # MLP activation

    def __post_init__(self) -> None:
        _check(
            self.hidden_size % self.num_attention_heads == 0,
            f"vit.hidden_size={self.hidden_size} is not divisible by vit.num_attention_heads="
            f"{self.num_attention_heads}",
        )
        _check(
            self.image_size % self.patch_size == 0,
            f"vit.image_size={self.image_size} must be a multiple of vit.patch_size={self.patch_size}",
        )
        _check(self.hidden_act in ACTIVATIONS, f"vit.hidden_act={quoted(self.hidden_act)}; choose one of {ACTIVATIONS}")

    @property
    def num_patches_per_side(self) -> int:
        """Side of the learned position table in patches (70 in the release)."""
        return self.image_size // self.patch_size


@dataclass
class VAEConfig:
    """FLUX autoencoder layout (frozen during unified training)."""

    in_channels: int = 3  # image channels in
    out_ch: int = 3  # image channels out
    ch: int = 128  # base channel width
    ch_mult: tuple[int, ...] = (1, 2, 4, 4)  # width multiplier per resolution level
    num_res_blocks: int = 2  # resnet blocks per encoder level (decoder has one more)
    z_channels: int = 16  # latent channels
    scale_factor: float = 0.3611  # latent = (z - shift_factor) * scale_factor
    shift_factor: float = 0.1159  # see scale_factor

    def __post_init__(self) -> None:
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        _check(len(self.ch_mult) >= 1, "vae.ch_mult needs at least one level")
        for m in self.ch_mult:
            _check(
                (self.ch * m) % 32 == 0,
                f"vae.ch={self.ch} times ch_mult entry {m} is not a multiple of 32 (GroupNorm uses 32 groups)",
            )

    @property
    def downsample(self) -> int:
        """Pixels per latent cell along one side (8 in the release)."""
        return 2 ** (len(self.ch_mult) - 1)


@dataclass
class ModelConfig:
    """The unified model: language model + vision encoder + VAE and how they are joined."""

    llm: LLMConfig = field(default_factory=LLMConfig)  # language model
    vit: ViTConfig = field(default_factory=ViTConfig)  # vision encoder (understanding path)
    vae: VAEConfig = field(default_factory=VAEConfig)  # autoencoder (generation path)
    visual_gen: bool = True  # build the generation path (VAE latents, flow loss)
    visual_und: bool = True  # build the understanding path (ViT + connector)
    latent_patch_size: int = 2  # latent cells per LLM token along one side
    max_latent_size: int = 64  # side of the latent position table, in latent patches
    vit_max_num_patch_per_side: int = 70  # side of the ViT position table, in patches
    connector_act: str = "gelu_pytorch_tanh"  # activation inside the ViT->LLM connector
    interpolate_pos: bool = False  # interpolate (True) or extrapolate (False) image position ids
    timestep_shift: float = 1.0  # flow-matching timestep shift used in training
    attn_backend: str = "auto"  # packed attention backend: auto | sdpa | flex | flash

    def __post_init__(self) -> None:
        _check(self.latent_patch_size >= 1, f"latent_patch_size must be >= 1, got {self.latent_patch_size}")
        _check(self.max_latent_size >= 1, f"max_latent_size must be >= 1, got {self.max_latent_size}")
        _check(
            self.vit_max_num_patch_per_side >= 1,
            f"vit_max_num_patch_per_side must be >= 1, got {self.vit_max_num_patch_per_side}",
        )
        _check(
            self.connector_act in ACTIVATIONS,
            f"connector_act={quoted(self.connector_act)}; choose one of {', '.join(ACTIVATIONS)}",
        )
        _check(
            self.attn_backend in ATTN_BACKENDS,
            f"attn_backend={quoted(self.attn_backend)}; choose one of {', '.join(ATTN_BACKENDS)}",
        )
        _check(self.timestep_shift > 0, f"timestep_shift must be > 0, got {self.timestep_shift}")

    @property
    def patch_latent_dim(self) -> int:
        """Width of one latent token before vae2llm: latent_patch_size^2 * z_channels."""
        return self.latent_patch_size**2 * self.vae.z_channels

    @property
    def vae_image_stride(self) -> int:
        """Pixels per latent token along one side (16 in the release)."""
        return self.vae.downsample * self.latent_patch_size

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "<dict>") -> ModelConfig:
        return from_dict(cls, data, source)


# ---------------------------------------------------------------------------------------------
# Generic dict / YAML helpers for any config dataclass (nested dataclasses included).


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (tuples become lists)."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(cfg)


def from_dict(cls: type[T], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Build config ``cls`` from a mapping; unknown keys and bad types raise ConfigError naming them."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {prefix or 'config'} must be a mapping, got {type(data).__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"{source}: {unknown_keys_message(unknown, known, prefix)}")
    kwargs: dict[str, Any] = {}
    hints = _resolved_types(cls)
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = from_dict(hint, value, source, prefix=f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, hint, f"{source}: {prefix}{name}")
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the one-line comment after its definition, for a dataclass and its bases.

    Config classes document each field with a trailing comment; ``--help`` texts are built from
    these, so the comment is the one place a field is described. A definition the formatter wrapped
    (``name: T = (`` then ``value  # comment`` on the next line) counts as written on one line.
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            lines = inspect.getsource(klass).splitlines()
        except (OSError, TypeError):  # no source (frozen app, interactive class)
            continue
        for line, following in zip(lines, [*lines[1:], ""]):
            match = _FIELD_LINE.match(line)
            if match:
                docs[match.group(1)] = match.group(2).strip()
            elif (start := _WRAPPED_FIELD.match(line)) and (comment := _COMMENT.search(following)):
                docs[start.group(1)] = comment.group(1).strip()
    names = {f.name for f in fields(cls)}
    return {name: doc for name, doc in docs.items() if name in names}


_FIELD_LINE = re.compile(r"^\s+([A-Za-z_]\w*)\s*:[^#]*#\s*(.+)$")
_WRAPPED_FIELD = re.compile(r"^\s+([A-Za-z_]\w*)\s*:[^#=]*=\s*\(\s*$")
_COMMENT = re.compile(r"#\s*(.+)$")


def unknown_keys_message(unknown, known, prefix: str = "") -> str:
    """'unknown key(s) X (did you mean Y?)': each with its closest known key; the known keys listed only
    when some unknown key has no close match (a long list hides the one that was meant)."""
    known = sorted(map(str, known))
    parts, lost = [], False
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        lost |= not close
        parts.append(f"{prefix}{key} (did you mean {prefix}{close[0]}?)" if close else f"{prefix}{key}")
    text = f"unknown key(s) {', '.join(parts)}"
    return f"{text}; known keys: {', '.join(prefix + k for k in known)}" if lost else text


def _resolved_types(cls: type) -> dict[str, Any]:
    import typing

    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Light type checking/coercion for YAML scalars (ints given for floats, lists for tuples)."""
    import typing

    origin = typing.get_origin(hint)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where} must be true or false, got {quoted(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be an integer, got {quoted(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where} must be a string, got {quoted(value)}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {quoted(value)}")
        return tuple(value)
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a parse error or a non-mapping names the file (and line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = _bounded_safe_load(path.read_text(encoding="utf-8-sig"), path)
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config; flatten it") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{where}: invalid YAML ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


MAX_YAML_NODES = 1_000_000  # values a YAML may stand for once its aliases are expanded (a config has thousands)


def _bounded_safe_load(text: str, path: Path) -> Any:
    """``yaml.safe_load`` that first counts the values the document stands for with its aliases expanded.

    PyYAML shares an aliased value instead of copying it, so a "billion laughs" file (ten levels
    of ten aliases) loads fast but is a list of 10^10 items to whatever walks or prints it. The node
    graph is counted (each shared node once, its size memoised; a self-referencing alias counts as
    unbounded) and a document above MAX_YAML_NODES is refused before anything is constructed.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node) > MAX_YAML_NODES:
            raise ConfigError(
                f"{path}: its aliases (*name) expand to more than {MAX_YAML_NODES:,} values, which no "
                'config needs (a "billion laughs" file?); write the values out or use fewer aliases'
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(root: yaml.Node) -> float:
    """Values under ``root`` with every alias expanded, without recursion; inf for a cycle or above the limit."""
    sizes: dict[int, float] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = (
            [n for pair in node.value for n in pair]
            if isinstance(node, yaml.MappingNode)
            else (node.value if isinstance(node, yaml.SequenceNode) else [])
        )
        if children_done:
            open_nodes.discard(key)
            total = 1 + sum(sizes[id(child)] for child in children)
            sizes[key] = total if total <= MAX_YAML_NODES else math.inf
            continue
        if key in open_nodes:  # reached again while its children are still being counted: a cycle
            return math.inf
        open_nodes.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in open_nodes:
                return math.inf
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def save_yaml(data: Mapping[str, Any] | Any, path: str | Path) -> None:
    """Write a config dataclass or mapping as YAML."""
    if dataclasses.is_dataclass(data):
        data = to_dict(data)
    Path(path).write_text(yaml.safe_dump(dict(data), sort_keys=False))


# ---------------------------------------------------------------------------------------------
# Named sizes.


def _debug() -> ModelConfig:
    # Small enough that a forward + backward runs in well under a second on one CPU core.
    return ModelConfig(
        llm=LLMConfig(
            vocab_size=1024,
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
            max_position_embeddings=4096,
        ),
        vit=ViTConfig(
            hidden_size=32,
            intermediate_size=64,
            num_attention_heads=2,
            num_hidden_layers=2,
            image_size=14 * 32,
        ),
        vae=VAEConfig(ch=32, ch_mult=(1, 1, 1, 1), num_res_blocks=1),
        max_latent_size=32,
        vit_max_num_patch_per_side=32,
    )


def _small() -> ModelConfig:
    # ~100M parameters: CPU experiments and the demo.
    return ModelConfig(
        llm=LLMConfig(
            vocab_size=4096,
            hidden_size=512,
            intermediate_size=1408,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=2,
            rope_theta=10000.0,
            max_position_embeddings=8192,
        ),
        vit=ViTConfig(
            hidden_size=256,
            intermediate_size=1024,
            num_attention_heads=4,
            num_hidden_layers=6,
            image_size=14 * 40,
        ),
        vae=VAEConfig(ch=64, ch_mult=(1, 1, 2, 2), num_res_blocks=1),
        max_latent_size=32,
        vit_max_num_patch_per_side=40,
    )


def _demo() -> ModelConfig:
    # What `unimedvl demo` trains from scratch in minutes on a CPU (64 px MedSynth images). The
    # demo replaces the VAE part with the autoencoder it trains.
    return ModelConfig(
        llm=LLMConfig(
            vocab_size=2048,
            hidden_size=256,
            intermediate_size=768,
            num_hidden_layers=4,
            num_attention_heads=4,
            num_key_value_heads=2,
            rope_theta=10000.0,
            max_position_embeddings=4096,
        ),
        vit=ViTConfig(
            hidden_size=128,
            intermediate_size=384,
            num_attention_heads=2,
            num_hidden_layers=2,
            image_size=14 * 16,
        ),
        # 2x downsampling, 4 latent channels, latent_patch_size 8: the release's 16 px per token (256-wide
        # tokens), and the autoencoder is the ceiling of every restoration score: trained for 300 steps
        # this layout reconstructs 64 px MedSynth at 30.5 dB, the 4x / z4 / patch 4 one at 24.5 dB and
        # the release's 8x / z16 at 19.8 dB (BENCHMARKS.md).
        vae=VAEConfig(ch=64, ch_mult=(1, 1), num_res_blocks=1, z_channels=4, scale_factor=1.0, shift_factor=0.0),
        latent_patch_size=8,
        max_latent_size=16,
        vit_max_num_patch_per_side=16,
    )


def _bagel_7b_mot() -> ModelConfig:
    # Exactly the release numbers (spec/unified-model.md section 1); the defaults are these.
    return ModelConfig()


MODEL_SIZES = {"debug": _debug, "demo": _demo, "small": _small, "bagel-7b-mot": _bagel_7b_mot}


def model_config(size: str) -> ModelConfig:
    """The ModelConfig of a named size (``debug``, ``demo``, ``small``, ``bagel-7b-mot``)."""
    try:
        return MODEL_SIZES[size]()
    except KeyError:
        raise ConfigError(f"unknown model size {quoted(size)}; choose one of {', '.join(MODEL_SIZES)}") from None


def load_model_config(path_or_size: str | Path) -> ModelConfig:
    """A ModelConfig from a named size or a YAML file (``size:`` key allowed as a base)."""
    text = str(path_or_size)
    if text in MODEL_SIZES or not (Path(text).suffix in (".yaml", ".yml") or Path(text).exists()):
        return model_config(text)
    data = load_yaml(path_or_size)
    base = data.pop("size", None)
    if base is not None:
        merged = merge_dicts(model_config(base).to_dict(), data)
        return from_dict(ModelConfig, merged, source=text)
    return from_dict(ModelConfig, data, source=text)


def merge_dicts(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: values in ``override`` win, nested mappings merge."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_dicts(out[key], value)
        else:
            out[key] = value
    return out
