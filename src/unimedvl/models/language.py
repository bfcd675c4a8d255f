"""The Qwen2-shaped decoder with optional Mixture-of-Transformers experts (the language model).

Three layer variants, chosen by ``LLMConfig.layer_module``:

- ``Qwen2DecoderLayer``: one set of weights (plain Qwen2 / Qwen2.5, or Qwen3 with ``qk_norm``).
- ``Qwen2MoTDecoderLayer``: two full copies, understanding (no suffix) and generation
  (suffix ``_moe_gen``): q/k/v/o projections, qk-norms, both layer norms and the MLP. Every token
  computes q/k/v with its own expert, then one joint attention runs over the whole sequence.
- ``Qwen2MoEDecoderLayer``: shared attention and norms, two MLPs (``mlp`` and ``mlp_moe_gen``).

Tokens are routed by ``Routing`` (index tensors or a boolean "uses the generation expert"
mask). Inside the stack the hidden states live as one stream per expert (the und tokens and the
gen tokens, gathered once per forward); only q/k/v are merged into packed order for attention and
the attention output is split back. Parameter names match the release checkpoint when this
module is mounted as ``language_model`` (spec unified-model.md section 2).

Two forwards share the layers: ``forward`` over a packed training sequence (``PackedLayout``)
and ``forward_cached`` for new tokens against a ``KVCache`` (prefill, decoding, denoising).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.config import LAYER_MODULES, LLMConfig
from unimedvl.errors import CheckpointError, ConfigError, DataError
from unimedvl.models.attention import PackedLayout, packed_attention
from unimedvl.models.hf_qwen import llm_config_from_hf, load_state_dict_files
from unimedvl.models.kv_cache import CacheStep, KVCache

GEN_SUFFIX = "_moe_gen"
UND, GEN = 0, 1  # expert ids


# ---------------------------------------------------------------------------------------------
# Building blocks.


class RMSNorm(nn.Module):
    """Root-mean-square norm with a learned scale; statistics in fp32 (as Qwen2 does)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(position_ids: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """RoPE tables for 1-D position ids; position_ids: (T,) -> cos, sin: (T, 1, head_dim)."""
    inv_freq = 1.0 / theta ** (
        torch.arange(0, head_dim, 2, dtype=torch.int64, device=position_ids.device).float() / head_dim
    )
    freqs = position_ids.float()[:, None] * inv_freq[None, :]  # (T, D/2), fp32 for long contexts
    emb = torch.cat([freqs, freqs], dim=-1)[:, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (i, i + D/2); x: (T, H, D), cos/sin: (T, 1, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class MLP(nn.Module):
    """SiLU-gated feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _part(module: nn.Module, name: str, expert: int) -> Any:
    """The expert's copy of submodule ``name``; falls back to the shared one when not duplicated."""
    if expert == GEN:
        gen = getattr(module, name + GEN_SUFFIX, None)
        if gen is not None:
            return gen
    return getattr(module, name)


class SelfAttention(nn.Module):
    """Projections of the attention block (q/k/v with optional bias, o without), optional qk-norm.

    With ``gen_copy`` every projection and norm has a ``_moe_gen`` twin for the generation expert.
    The attention itself is supplied by the caller (packed or cached), so it is joint over experts.
    """

    def __init__(self, cfg: LLMConfig, gen_copy: bool):
        super().__init__()
        self.num_heads, self.num_kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = cfg.head_dim
        q_out, kv_out = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        for suffix in ("", GEN_SUFFIX) if gen_copy else ("",):
            setattr(self, "q_proj" + suffix, nn.Linear(cfg.hidden_size, q_out, bias=cfg.attention_bias))
            setattr(self, "k_proj" + suffix, nn.Linear(cfg.hidden_size, kv_out, bias=cfg.attention_bias))
            setattr(self, "v_proj" + suffix, nn.Linear(cfg.hidden_size, kv_out, bias=cfg.attention_bias))
            setattr(self, "o_proj" + suffix, nn.Linear(q_out, cfg.hidden_size, bias=False))
            if cfg.qk_norm:
                setattr(self, "q_norm" + suffix, RMSNorm(self.head_dim, cfg.rms_norm_eps))
                setattr(self, "k_norm" + suffix, RMSNorm(self.head_dim, cfg.rms_norm_eps))
        self.qk_norm = cfg.qk_norm

    def project(self, x: Tensor, expert: int, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """x: (n, hidden) -> q: (n, Hq, D), k, v: (n, Hkv, D), with qk-norm and RoPE applied."""
        n = x.shape[0]
        q = _part(self, "q_proj", expert)(x).view(n, self.num_heads, self.head_dim)
        k = _part(self, "k_proj", expert)(x).view(n, self.num_kv_heads, self.head_dim)
        v = _part(self, "v_proj", expert)(x).view(n, self.num_kv_heads, self.head_dim)
        if self.qk_norm:
            q = _part(self, "q_norm", expert)(q)
            k = _part(self, "k_norm", expert)(k)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def output(self, a: Tensor, expert: int) -> Tensor:
        """a: (n, Hq * D) -> (n, hidden)."""
        return _part(self, "o_proj", expert)(a)


# ---------------------------------------------------------------------------------------------
# Routing and the per-forward context shared by all layers.


class Routing:
    """Which tokens of a (T,)-long sequence use the generation expert.

    Holds one stream per expert present (und first). ``split`` gathers a packed (T, ...) tensor
    into the streams, ``merge`` puts per-stream tensors back in packed order.
    """

    def __init__(self, num_tokens: int, und_idx: Tensor | None, gen_idx: Tensor | None):
        self.num_tokens = num_tokens
        n_und = num_tokens if und_idx is None else int(und_idx.numel())
        n_gen = 0 if gen_idx is None else int(gen_idx.numel())
        if n_und + n_gen != num_tokens:
            raise DataError(
                f"routing: und_idx ({n_und}) and gen_idx ({n_gen}) must together cover all {num_tokens} tokens"
            )
        if n_gen == 0 or n_und == 0:
            # One expert for everything: streams are the packed tensor itself (no gathers).
            self.experts = [GEN if n_gen else UND]
            self._idx = None
        else:
            self.experts = [UND, GEN]
            self._idx = [und_idx, gen_idx]
            self._inverse = torch.argsort(torch.cat([und_idx, gen_idx]))

    @classmethod
    def build(cls, num_tokens: int, routing: Routing | Tensor | None) -> Routing:
        """From None (all und), a Routing, or a (T,) bool mask that is True for gen tokens."""
        if routing is None:
            return cls(num_tokens, None, None)
        if isinstance(routing, Routing):
            if routing.num_tokens != num_tokens:
                raise DataError(f"routing covers {routing.num_tokens} tokens but the input has {num_tokens}")
            return routing
        if routing.dtype != torch.bool or routing.shape != (num_tokens,):
            raise DataError(
                f"routing mask must be a bool tensor of shape ({num_tokens},) (True = generation expert), "
                f"got {routing.dtype} {tuple(routing.shape)}"
            )
        return cls.from_mask(routing)

    @classmethod
    def from_mask(cls, gen_mask: Tensor) -> Routing:
        """gen_mask: (T,) bool, True where the token uses the generation expert."""
        idx = torch.arange(gen_mask.shape[0], device=gen_mask.device)
        return cls(gen_mask.shape[0], idx[~gen_mask], idx[gen_mask])

    @classmethod
    def from_indices(cls, und_idx: Tensor, gen_idx: Tensor) -> Routing:
        """Disjoint index tensors that together cover 0..T-1."""
        return cls(und_idx.numel() + gen_idx.numel(), und_idx, gen_idx)

    def split(self, x: Tensor) -> list[Tensor]:
        if self._idx is None:
            return [x]
        return [x.index_select(0, i) for i in self._idx]

    def merge(self, parts: Sequence[Tensor]) -> Tensor:
        if self._idx is None:
            return parts[0]
        return torch.cat(list(parts), dim=0).index_select(0, self._inverse)


class _Context:
    """Everything a layer needs besides its input streams, built once per forward."""

    def __init__(
        self,
        routing: Routing,
        rope: list[tuple[Tensor, Tensor]],  # (cos, sin) per expert stream
        attend: Callable[[int, Tensor, Tensor, Tensor], Tensor],  # (layer_idx, q, k, v) -> packed output
    ):
        self.routing, self.rope, self.attend = routing, rope, attend
        self._on_device: dict[torch.device, _Context] = {}

    def to(self, device: torch.device) -> _Context:
        """This context with its routing indexes and rope tables on ``device`` (copied once per device)."""
        if self.rope[0][0].device == device:
            return self
        if device not in self._on_device:
            routing = self.routing
            if routing._idx is not None:
                routing = Routing.from_indices(*(i.to(device) for i in routing._idx))
            rope = [(cos.to(device), sin.to(device)) for cos, sin in self.rope]
            self._on_device[device] = _Context(routing, rope, self.attend)
        return self._on_device[device]


# ---------------------------------------------------------------------------------------------
# Decoder layers.


class Qwen2DecoderLayer(nn.Module):
    """Pre-norm decoder layer: x + attn(norm(x)), then x + mlp(norm(x)). No experts."""

    gen_attention = False  # duplicate attention projections and both layer norms
    gen_mlp = False  # duplicate the MLP

    def __init__(self, cfg: LLMConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.self_attn = SelfAttention(cfg, gen_copy=self.gen_attention)
        self.mlp = MLP(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if self.gen_attention:
            self.input_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
            self.post_attention_layernorm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if self.gen_mlp:
            self.mlp_moe_gen = MLP(cfg)

    def forward(self, streams: list[Tensor], ctx: _Context) -> list[Tensor]:
        """streams: one (n_e, hidden) tensor per expert in ctx.routing.experts -> same shapes."""
        experts = ctx.routing.experts
        qkv = [
            self.self_attn.project(_part(self, "input_layernorm", e)(x), e, cos, sin)
            for x, e, (cos, sin) in zip(streams, experts, ctx.rope)
        ]
        q, k, v = (ctx.routing.merge([t[i] for t in qkv]) for i in range(3))  # packed order
        attn = ctx.attend(self.layer_idx, q, k, v).flatten(1)  # (T, Hq * D)
        out = []
        for x, a, e in zip(streams, ctx.routing.split(attn), experts):
            x = x + self.self_attn.output(a, e)
            x = x + _part(self, "mlp", e)(_part(self, "post_attention_layernorm", e)(x))
            out.append(x)
        return out


class Qwen2MoTDecoderLayer(Qwen2DecoderLayer):
    """Mixture-of-Transformers layer: und and gen experts each own every weight; joint attention."""

    gen_attention = True
    gen_mlp = True


class Qwen2MoEDecoderLayer(Qwen2DecoderLayer):
    """Shared attention and norms, separate MLPs for the und and gen experts."""

    gen_attention = False
    gen_mlp = True


LAYER_CLASSES = {
    "Qwen2DecoderLayer": Qwen2DecoderLayer,
    "Qwen2MoTDecoderLayer": Qwen2MoTDecoderLayer,
    "Qwen2MoEDecoderLayer": Qwen2MoEDecoderLayer,
}
assert tuple(LAYER_CLASSES) == LAYER_MODULES


class DecoderStack(nn.Module):
    """embed_tokens, the layers and the final norm(s): mounted as ``language_model.model``."""

    def __init__(self, cfg: LLMConfig):
        super().__init__()
        if cfg.layer_module not in LAYER_CLASSES:
            raise ConfigError(
                f"llm.layer_module={cfg.layer_module!r} is unknown; choose one of {', '.join(LAYER_CLASSES)}"
            )
        layer_cls = LAYER_CLASSES[cfg.layer_module]
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(layer_cls(cfg, i) for i in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        if cfg.has_gen_expert:
            self.norm_moe_gen = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


# ---------------------------------------------------------------------------------------------
# The language model.


class LanguageModel(nn.Module):
    """Qwen2-style causal LM with optional MoT/MoE experts; ``.model`` (stack) and ``.lm_head``."""

    def __init__(self, config: LLMConfig, attn_backend: str = "auto"):
        super().__init__()
        self.config = config
        self.attn_backend = attn_backend  # packed attention backend (auto | sdpa | flex | flash)
        self.model = DecoderStack(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Where each decoder layer runs when they are spread over devices (unimedvl.checkpoint.placement);
        # None: every layer runs where lm_head lives. Activations and KV rows follow the layers.
        self.layer_devices: list[torch.device] | None = None
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    # -- weights ------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh weights: normal(0, initializer_range) for matrices, zero biases, unit norms; then init_moe."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
        self.init_moe()

    @torch.no_grad()
    def init_moe(self) -> None:
        """Copy every understanding weight into its ``_moe_gen`` twin (start of MoT training)."""
        params = dict(self.named_parameters())
        for name, p in params.items():
            if GEN_SUFFIX in name:
                p.copy_(params[name.replace(GEN_SUFFIX, "")])

    # -- forwards -----------------------------------------------------------------------------

    def embed(self, input_ids: Tensor) -> Tensor:
        """Token embeddings; input_ids: (...,) -> (..., hidden)."""
        return self.model.embed_tokens(input_ids)

    def logits(self, hidden: Tensor) -> Tensor:
        """Next-token logits from final hidden states; (..., hidden) -> (..., vocab)."""
        return self.lm_head(hidden)

    def _run(self, hidden: Tensor, position_ids: Tensor, routing: Routing | Tensor | None, attend) -> Tensor:
        T = hidden.shape[0]
        if position_ids.shape != (T,):
            raise DataError(
                f"position_ids must have shape ({T},) to match hidden states, got {tuple(position_ids.shape)}"
            )
        routing = Routing.build(T, routing if self.config.has_gen_expert else None)
        cos, sin = rope_cos_sin(position_ids, self.config.head_dim, self.config.rope_theta, hidden.dtype)
        ctx = _Context(routing, list(zip(routing.split(cos), routing.split(sin))), attend)
        streams = routing.split(hidden)
        devices = self.layer_devices
        # Activation checkpointing is applied from outside (train/parallel.py), per layer.
        for i, layer in enumerate(self.model.layers):
            if devices is not None and streams[0].device != devices[i]:
                # A layer on another device: the activations move there, once per device change.
                streams = [x.to(devices[i]) for x in streams]
            streams = layer(streams, ctx if devices is None else ctx.to(devices[i]))
        if streams[0].device != hidden.device:
            streams = [x.to(hidden.device) for x in streams]
        normed = [_part(self.model, "norm", e)(x) for x, e in zip(streams, routing.experts)]
        return routing.merge(normed)

    def forward(
        self,
        hidden: Tensor,
        layout: PackedLayout,
        position_ids: Tensor,
        routing: Routing | Tensor | None = None,
    ) -> Tensor:
        """Packed forward (training); hidden: (T, hidden) embedded tokens -> (T, hidden) final states.

        layout: the samples/splits of the packed sequence. position_ids: (T,) RoPE ids.
        routing: None (all understanding expert), a (T,) bool mask True for generation-expert
        tokens, or a ``Routing`` (ignored by a plain ``Qwen2DecoderLayer`` model, which has one
        expert). Each token leaves normed by its expert's final norm.
        """
        layout.check_tokens(hidden.shape[0], "hidden")
        backend = self.attn_backend

        def attend(layer_idx: int, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
            return packed_attention(q, k, v, layout, backend)

        return self._run(hidden, position_ids, routing, attend)

    def forward_cached(
        self,
        hidden: Tensor,
        position_ids: Tensor,
        cache: KVCache | CacheStep,
        *,
        rows: Sequence[int] | None = None,
        query_lens: Sequence[int] | int | None = None,
        mode: str | Sequence[str] = "causal",
        write: bool = True,
        routing: Routing | Tensor | None = None,
    ) -> Tensor:
        """New tokens against a KV cache (prefill, decode, denoise); hidden: (N, hidden) -> (N, hidden).

        The N tokens are packed row after row (``query_lens[b]`` tokens for ``rows[b]``; default:
        all rows, N split evenly). ``mode`` is the attention among the new tokens. ``write=False``
        reads the cache without adding the new tokens. Pass a prepared ``CacheStep`` instead of
        the cache to reuse a plan.
        """
        if isinstance(cache, CacheStep):
            step = cache
        else:
            n_rows = cache.num_rows if rows is None else len(rows)
            if query_lens is None:
                if hidden.shape[0] % n_rows:
                    raise DataError(
                        f"{hidden.shape[0]} new tokens cannot be split evenly over {n_rows} rows; pass query_lens"
                    )
                query_lens = hidden.shape[0] // n_rows
            step = cache.plan(rows, query_lens, mode, write)
        if step.num_tokens != hidden.shape[0]:
            raise DataError(f"hidden has {hidden.shape[0]} tokens but the cache step expects {step.num_tokens}")
        out = self._run(hidden, position_ids, routing, step.attend)
        step.commit()
        return out

    def new_cache(self, rows: int = 1, capacity: int = 256) -> KVCache:
        """An empty KV cache matching this model's layers, heads, dtype and devices (each layer's own)."""
        # embed_tokens: always in the compute dtype (never quantised), on the model's main device.
        p = self.model.embed_tokens.weight
        c = self.config
        return KVCache(
            c.num_hidden_layers,
            c.num_key_value_heads,
            c.head_dim,
            rows=rows,
            capacity=capacity,
            dtype=p.dtype,
            device=p.device,
            layer_devices=self.layer_devices,
        )

    def forward_text(self, input_ids: Tensor) -> Tensor:
        """Causal LM logits of plain token batches (no padding); input_ids: (B, L) -> (B, L, vocab)."""
        B, L = input_ids.shape
        layout = PackedLayout.from_splits([[(L, "causal")]] * B)
        positions = torch.arange(L, device=input_ids.device).repeat(B)
        hidden = self.forward(self.embed(input_ids.reshape(-1)), layout, positions)
        return self.logits(hidden).view(B, L, -1)

    @torch.no_grad()
    def generate_greedy(self, input_ids: Tensor, max_new_tokens: int, eos_token_id: int | None = None) -> Tensor:
        """Greedy continuation of equal-length prompts with the KV cache; (B, L) -> (B, L + new).

        A row that emits ``eos_token_id`` keeps emitting it (its row still runs, as a batch).
        """
        B, L = input_ids.shape
        cache = self.new_cache(rows=B, capacity=L + max_new_tokens)
        positions = torch.arange(L, device=input_ids.device).repeat(B)
        hidden = self.forward_cached(self.embed(input_ids.reshape(-1)), positions, cache, query_lens=L)
        last = hidden.view(B, L, -1)[:, -1]  # (B, hidden)
        out = [input_ids]
        done = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            token = self.logits(last).argmax(-1)  # (B,)
            if eos_token_id is not None:
                token = torch.where(done, torch.full_like(token, eos_token_id), token)
                done |= token == eos_token_id
            out.append(token[:, None])
            if step + 1 == max_new_tokens or (eos_token_id is not None and bool(done.all())):
                break
            pos = torch.full((B,), L + step, device=input_ids.device)
            last = self.forward_cached(self.embed(token), pos, cache, query_lens=1)
        return torch.cat(out, dim=1)

    # -- loading ------------------------------------------------------------------------------

    @classmethod
    def from_hf_pretrained(
        cls,
        path: str | Path,
        layer_module: str | None = None,
        *,
        qk_norm: bool | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        attn_backend: str = "auto",
    ) -> LanguageModel:
        """Load a local HF Qwen2 / Qwen2.5 / Qwen3 directory; the gen expert starts as a copy (init_moe).

        ``layer_module`` / ``qk_norm`` override what config.json says (Qwen2 checkpoints carry no
        experts; Qwen3 implies qk_norm). Tensors whose shapes disagree with the config raise
        CheckpointError naming the tensor.
        """
        path = Path(path)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise CheckpointError(f"{config_file}: not found; expected a Hugging Face model directory")
        try:
            hf = json.loads(config_file.read_text())
        except json.JSONDecodeError as err:
            raise CheckpointError(f"{config_file}: invalid JSON ({err})") from None
        cfg = llm_config_from_hf(hf, source=str(config_file), layer_module=layer_module, qk_norm=qk_norm)
        state = load_state_dict_files(path)
        with torch.device("meta"):
            model = cls(cfg, attn_backend=attn_backend)
        model.load_checkpoint_state(state, source=str(path), dtype=dtype, device=device)
        return model

    def load_checkpoint_state(
        self,
        state: dict[str, Tensor],
        source: str,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        """Load tensors named as in this module (an optional ``language_model.`` prefix is stripped).

        Missing ``_moe_gen`` tensors are filled by init_moe; a missing lm_head with tied
        embeddings is fine. Any other missing tensor, unknown tensor, or shape mismatch raises
        CheckpointError naming it.
        """
        state = {k.removeprefix("language_model."): v for k, v in state.items()}
        for name in [k for k in state if k.endswith("o_proj.bias")]:
            # Qwen3 with attention_bias=True also biases o_proj; our (release) layer has none, so
            # only an all-zero bias can be dropped without changing the function.
            if bool(state[name].any()):
                raise CheckpointError(
                    f"{source}: tensor {name} is a non-zero output-projection bias, which this architecture "
                    "(o_proj without bias, as in the release) cannot represent"
                )
            del state[name]
        own = dict(self.named_parameters(remove_duplicate=False))
        unknown = sorted(k for k in state if k not in own and not k.endswith("rotary_emb.inv_freq"))
        if unknown:
            raise CheckpointError(
                f"{source}: unexpected tensor(s) {', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''} "
                f"not in a {self.config.layer_module} language model with this config"
            )
        for name, p in own.items():
            if name in state and tuple(state[name].shape) != tuple(p.shape):
                raise CheckpointError(
                    f"{source}: tensor {name} has shape {tuple(state[name].shape)} but the config implies "
                    f"{tuple(p.shape)}; the checkpoint does not match its config.json"
                )
        tied_head = "lm_head.weight" if self.config.tie_word_embeddings else None
        missing = [n for n in own if n not in state and GEN_SUFFIX not in n and n != tied_head]
        if missing:
            more = " ..." if len(missing) > 5 else ""
            raise CheckpointError(f"{source}: missing tensor(s) {', '.join(missing[:5])}{more}")
        has_gen = any(GEN_SUFFIX in n for n in state)
        params: dict[str, Tensor] = {}
        for name in own:
            # copy=True: fresh, aligned memory of our own, never a view into a memory-mapped
            # file (safetensors data offsets are not 64-byte aligned, which slows matmuls).
            if name in state:
                params[name] = state[name].to(device=device, dtype=dtype, copy=True)
            elif GEN_SUFFIX in name and not has_gen:
                params[name] = state[name.replace(GEN_SUFFIX, "")].to(device=device, dtype=dtype, copy=True)
            elif name == "lm_head.weight":
                continue  # tied: set below
            else:
                raise CheckpointError(
                    f"{source}: missing tensor {name} (the checkpoint has some but not all expert weights)"
                )
        self.load_state_dict(params, strict=False, assign=True)
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
