"""Training memory plans: what a fine-tune holds per GPU, plan by plan, before anything is loaded.

A :class:`TrainPlan` is a method (``full`` fine-tune, ``lora`` on a base held in the compute
dtype, ``qlora-int8`` / ``qlora-nf4`` with the frozen decoder and ViT Linear weights quantised)
with or without activation checkpointing and with or without an EMA. :func:`estimate_train_plans`
counts, tensor by tensor on a meta-device model (nothing is read or allocated), the bytes one GPU
holds for each plan; ``unimedvl info --memory --train`` prints them and ``train --max_memory``
picks the first plan that fits (:func:`plan_for_config`).

What is counted (``N`` GPUs with FSDP2 FULL_SHARD; one process without FSDP when ``N`` = 1):

- weights: trainable parameters as fp32 masters, sharded over ``N``; frozen floating parameters in
  the compute dtype (a LoRA run across several processes keeps its frozen base in fp32, as FSDP2
  stores it: only the QLoRA loader casts it before sharding); quantised Linear weights in their
  storage (:func:`unimedvl.checkpoint.quantization.quantized_weight_bytes`; int8 is not sharded, FSDP2 has no
  all-gather for it); the VAE and the position tables whole on every GPU. Plus what compute
  needs on top: in one process under autocast, a compute-dtype copy of every trainable weight
  (autocast caches them for the forward); under FSDP2 the gathered root (embeddings, lm_head,
  heads: it stays gathered through the step) and two gathered layers (the running one and the
  prefetched one).
- gradients: fp32, one per trainable parameter, sharded (under FSDP2 plus the largest layer's
  unsharded gradient before its reduce-scatter).
- optimizer: AdamW's two fp32 moments per trainable parameter, sharded; its step also allocates
  a fp32 buffer per trainable parameter (``foreach`` sqrt), counted against the activations (the
  two never coexist: activations are freed when the step runs).
- EMA: an fp32 shadow of every trainable parameter, sharded.
- activations of one micro-batch of ``tokens`` packed tokens (not sharded: each GPU has its own).
  Per decoder layer and token, the tensors autograd saves (a Linear saves its input only when its
  weight trains or carries an adapter; norms keep an fp32 copy; attention keeps q, k, v and its
  output, never the scores: flash/efficient kernels on CUDA, SDPA's flash kernel on a CPU). With
  activation checkpointing only each layer's input stays, plus one layer recomputed in backward.
  The worst case of what the tokens are is taken: all text with a loss (the fp32 logits,
  log-softmax and two gradients, 12 bytes per token and vocabulary entry) or all ViT tokens (the
  vision encoder's own activations), whichever needs more. QLoRA adds the peak of dequantising the
  largest quantised matrix, temporaries included (:data:`DEQUANT_PEAK_BYTES`). An estimate to decide
  what fits with a margin, not to the megabyte: ``bench/train_memory.py`` checks it against
  measured peaks.
- overhead: the CUDA context and allocator slack (or the CPU process), as the inference plans.

This module never imports the trainer; the TrainConfig it reads is duck-typed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from unimedvl.checkpoint.memory_estimate import OVERHEAD_BYTES, dtype_bytes
from unimedvl.checkpoint.memory_plan import format_bytes
from unimedvl.config import ModelConfig
from unimedvl.errors import ConfigError

METHODS = ("full", "lora", "qlora-int8", "qlora-nf4")  # cheapest in quality and time first
QUANTIZE = {"full": "none", "lora": "none", "qlora-int8": "int8", "qlora-nf4": "nf4"}
DEFAULT_LORA_RANK = 16  # the rank a LoRA plan takes when the run names none (lora_rank 0)
LORA_PARTS = ("und", "gen", "vit")
LAYERS = "language_model.model.layers."
VIT_LAYERS = "vit_model.vision_model.encoder.layers."
QUANTIZED_PREFIXES = (LAYERS, VIT_LAYERS)  # the Linear weights a QLoRA base holds quantised
GEN_SUFFIX = "_moe_gen"
CE_BYTES_PER_LOGIT = 12  # fp32 log-softmax output kept for backward, its gradient and the incoming one
# Peak bytes per weight while torchao 0.18 dequantises one matrix to the compute dtype (output and
# temporaries), measured on an 18944 x 3584 matrix (tests/test_train_memory.py re-measures a smaller one):
# int8 computes in fp32 then casts; nf4 unpacks its 4-bit codes and block scales first.
DEQUANT_PEAK_BYTES = {("int8", 4): 8, ("int8", 2): 10, ("nf4", 4): 14, ("nf4", 2): 14}


@dataclass(frozen=True)
class TrainPlan:
    """One way to fine-tune: the method, activation checkpointing, an EMA."""

    method: str = "full"
    checkpointing: bool = True
    ema: bool = True

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"training plan method={self.method!r}; choose one of {', '.join(METHODS)}")

    @property
    def quantize(self) -> str:
        return QUANTIZE[self.method]

    @property
    def lora(self) -> bool:
        return self.method != "full"

    @property
    def label(self) -> str:
        """``qlora-nf4+ckpt+ema``, ``full``, ...: the plan's name in tables and messages."""
        return self.method + ("+ckpt" if self.checkpointing else "") + ("+ema" if self.ema else "")


@dataclass(frozen=True)
class TrainSetup:
    """What the run trains and on what, besides the plan (from a TrainConfig, or the defaults)."""

    tokens: int = 2048  # packed tokens of one micro-batch (the pack: max_num_tokens)
    gpus: int = 1  # processes sharding the model with FSDP2 (1: no sharding)
    dtype: str = "bf16"  # compute dtype
    cuda: bool = True  # the budget is GPU memory (else host RAM of a CPU run)
    visual_gen: bool = True
    visual_und: bool = True
    freeze_llm: bool = False  # full plans only: LoRA plans always freeze the LLM and ViT bases
    freeze_vit: bool = False
    lora_rank: dict = dataclasses.field(default_factory=lambda: dict.fromkeys(LORA_PARTS, DEFAULT_LORA_RANK))
    lora_targets: dict = dataclasses.field(
        default_factory=lambda: dict.fromkeys(LORA_PARTS, ("q_proj", "k_proj", "v_proj", "o_proj"))
    )
    ce_tokens: int | None = None  # text tokens with a loss in the pack (None: all of them, the worst case)
    vit_tokens: int | None = None  # ViT tokens in the pack (None: all of them, the worst case)

    def __post_init__(self) -> None:
        for name in ("tokens", "gpus"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")

    @classmethod
    def from_config(cls, cfg, gpus: int = 1, cuda: bool = True) -> TrainSetup:
        """The setup of a TrainConfig: pack size, compute dtype, paths, freezing and LoRA per part.

        A part's rank is ``lora_rank_<part>`` when the config has it (None: ``lora_rank``); a run
        without LoRA is planned, for the LoRA plans, with rank :data:`DEFAULT_LORA_RANK`.
        """
        base = cfg.lora_rank or DEFAULT_LORA_RANK
        ranks, targets = {}, {}
        for part in LORA_PARTS:
            rank = getattr(cfg, f"lora_rank_{part}", None)
            ranks[part] = base if rank is None else rank
            given = getattr(cfg, f"lora_targets_{part}", None)
            targets[part] = tuple(cfg.lora_target_modules if given is None else given)
        dtype = cfg.dtype if cfg.dtype != "auto" else ("bf16" if cuda else "fp32")
        return cls(
            tokens=cfg.max_num_tokens,
            gpus=gpus,
            dtype=dtype,
            cuda=cuda,
            visual_gen=cfg.visual_gen,
            visual_und=cfg.visual_und,
            freeze_llm=cfg.freeze_llm,
            freeze_vit=cfg.freeze_vit,
            lora_rank=ranks,
            lora_targets=targets,
        )


@dataclass(frozen=True)
class TrainEstimate:
    """The bytes one GPU holds for one plan."""

    plan: TrainPlan
    parameters: int  # all parameters (adapters included)
    trainable: int  # trainable parameters
    weights: int  # stored weights on this GPU + compute copies (autocast cache / gathered FSDP units)
    gradients: int
    optimizer: int  # AdamW moments
    ema: int
    activations: int  # activations of one micro-batch (or the optimizer step's buffer, if larger)
    overhead: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.ema + self.activations + self.overhead

    def fits(self, budget: int) -> bool:
        return self.total <= budget


def all_plans(methods=METHODS) -> list[TrainPlan]:
    """Every plan, in the order ``--max_memory`` tries them (the least compromise first).

    Per method: no checkpointing, then checkpointing (costs time only), then without the EMA
    (changes what is saved); methods from full to the most compressed base.
    """
    return [
        TrainPlan(m, ckpt, ema)
        for m in methods
        for ckpt, ema in ((False, True), (True, True), (True, False), (False, False))
    ]


# ---------------------------------------------------------------------------------------------
# Counting.


@dataclass
class _Tensor:
    name: str
    numel: int
    unit: str  # FSDP unit: a layer's prefix, "root", or "replicated" (VAE, buffers)
    trainable: bool
    stored: int  # bytes as held at rest on one process (before sharding)
    quantized: bool = False


def _unit(name: str) -> str:
    for prefix in (LAYERS, VIT_LAYERS):
        if name.startswith(prefix):
            return prefix + name[len(prefix) :].split(".", 1)[0]
    return "replicated" if name.startswith("vae.") else "root"


def _lora_part(name: str) -> str | None:
    if name.startswith(VIT_LAYERS):
        return "vit"
    if name.startswith(LAYERS):
        return "gen" if name.endswith(GEN_SUFFIX) else "und"
    return None


def _matches(name: str, targets) -> bool:
    """The trainer's LoRA target rule (train/lora.py): last name component, with or without ``_moe_gen``."""
    last = name.rsplit(".", 1)[-1]
    base = last.removesuffix(GEN_SUFFIX)
    return any(t in (last, base) for t in targets)


def _meta_model(cfg: ModelConfig, setup: TrainSetup):
    import torch

    from unimedvl.models.unified import UnifiedModel

    cfg = dataclasses.replace(
        cfg, visual_gen=setup.visual_gen and cfg.visual_gen, visual_und=setup.visual_und and cfg.visual_und
    )
    with torch.device("meta"):
        return UnifiedModel(cfg)


def _inventory(model, plan: TrainPlan, setup: TrainSetup) -> tuple[list[_Tensor], dict[str, tuple[bool, int]]]:
    """Every tensor a run of ``plan`` holds, and per Linear (name -> (saves its input, adapter rank))."""
    from torch import nn

    from unimedvl.checkpoint.quantization import quantized_weight_bytes

    b = dtype_bytes(setup.dtype)
    # Frozen weights: the QLoRA loader casts them to the compute dtype, the one-process LoRA trainer too;
    # otherwise they stay the fp32 the model is built in (FSDP2 shards them as they are).
    frozen_b = b if (plan.quantize != "none" or (plan.lora and setup.gpus == 1)) else 4
    linears: dict[str, tuple[bool, int]] = {}
    out: list[_Tensor] = []
    for mname, module in model.named_modules():
        prefix = f"{mname}." if mname else ""
        part = _lora_part(mname)
        rank = setup.lora_rank.get(part, 0) if plan.lora and part and isinstance(module, nn.Linear) else 0
        if rank and not _matches(mname, setup.lora_targets[part]):
            rank = 0
        for local, p in module.named_parameters(recurse=False):
            name = prefix + local
            trainable = _trainable(name, plan, setup)
            quantized = (
                plan.quantize != "none"
                and local == "weight"
                and isinstance(module, nn.Linear)
                and name.startswith(QUANTIZED_PREFIXES)
            )
            if quantized:
                stored = quantized_weight_bytes(*p.shape, plan.quantize)
            else:
                stored = p.numel() * (4 if trainable else (b if name.startswith("vae.") else frozen_b))
            out.append(_Tensor(name, p.numel(), _unit(name), trainable, stored, quantized))
        for local, buf in module.named_buffers(recurse=False):
            out.append(_Tensor(prefix + local, buf.numel(), "replicated", False, buf.numel() * 4))
        if isinstance(module, nn.Linear):
            trains = _trainable(prefix + "weight", plan, setup)
            linears[mname] = (trains or rank > 0, rank)
            if rank:
                n = rank * (module.in_features + module.out_features)
                out.append(_Tensor(prefix + "lora", n, _unit(prefix + "lora"), True, 4 * n))
    return out, linears


def _trainable(name: str, plan: TrainPlan, setup: TrainSetup) -> bool:
    if name.startswith(("vae.", "vit_pos_embed.", "latent_pos_embed.")):
        return False
    if name.startswith("language_model."):
        return not (plan.lora or setup.freeze_llm)
    if name.startswith("vit_model."):
        return not (plan.lora or setup.freeze_vit)
    return True  # connector, time embedder, latent projections


def _static_bytes(tensors: list[_Tensor], plan: TrainPlan, setup: TrainSetup) -> dict[str, int]:
    n, b = setup.gpus, dtype_bytes(setup.dtype)
    trainable = sum(t.numel for t in tensors if t.trainable)
    units: dict[str, list[_Tensor]] = {}
    for t in tensors:
        units.setdefault(t.unit, []).append(t)
    whole = sum(t.stored for t in tensors if t.unit == "replicated" or (t.quantized and plan.quantize == "int8"))
    sharded = sum(t.stored for t in tensors) - whole
    weights = whole + (sharded + n - 1) // n
    grads = 4 * trainable // n
    if n == 1:
        if b < 4:
            weights += b * trainable  # autocast's cached compute copies of the trainable weights
    else:

        def gathered(ts):
            return sum(
                t.stored if t.quantized else t.numel * b for t in ts if not (t.quantized and plan.quantize == "int8")
            )

        layer_units = [u for u in units if u not in ("root", "replicated")]
        biggest = sorted((gathered(units[u]) for u in layer_units), reverse=True)[:2]
        weights += gathered(units.get("root", [])) + sum(biggest)
        grads += max((4 * sum(t.numel for t in units[u] if t.trainable) for u in layer_units), default=0)
    return {
        "trainable": trainable,
        "weights": weights,
        "gradients": grads,
        "optimizer": 8 * trainable // n,
        "ema": 4 * trainable // n if plan.ema else 0,
        "step": 4 * trainable // n,
    }


def _layer_saved(
    widths: dict, linears: dict[str, tuple[bool, int]], prefix: str, suffix: str, b: int, r: int, vit: bool
) -> int:
    """Bytes one token leaves saved for backward in one layer (one expert's path of a decoder layer)."""

    def saves(name):
        return linears.get(prefix + name + suffix, (False, 0))

    def inputs(names, width):  # one cast copy shared, or one per Linear when the stream is wider (autocast)
        saving = [n for n in names if saves(n)[0]]
        return (len(saving) if r > b else min(len(saving), 1)) * b * width

    def lora(names):
        return sum(b * saves(n)[1] for n in names)

    h, i, q, kv = widths["h"], widths["i"], widths["q"], widths["kv"]
    attn = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    out_proj = "self_attn.out_proj" if vit else "self_attn.o_proj"
    mlp_in = ("mlp.fc1",) if vit else ("mlp.gate_proj", "mlp.up_proj")
    mlp_out = "mlp.fc2" if vit else "mlp.down_proj"
    total = 2 * (4 * h + r * h)  # two norms: the fp32 statistics input and the normalised stream
    total += inputs(attn, h) + inputs(mlp_in, h) + lora(attn + mlp_in + (out_proj, mlp_out))
    total += b * (2 * q + 2 * kv)  # attention: q, k, v and its output
    total += b * q * bool(saves(out_proj)[0]) + b * i * bool(saves(mlp_out)[0])
    if vit:
        total += b * i  # the activation's input (fc1 output)
    else:
        total += 3 * b * i + (4 + b) * (q + kv) * widths["qk_norm"]  # gate, silu(gate), up; q/k norms
    return total


def _activation_bytes(
    model, cfg: ModelConfig, linears, plan: TrainPlan, setup: TrainSetup, tensors: list[_Tensor]
) -> int:
    b = dtype_bytes(setup.dtype)
    # The residual stream has the token embeddings' dtype: as stored in one process (fp32 unless cast),
    # the compute dtype under FSDP2 (which gathers in it).
    embed = next(t for t in tensors if t.name == "language_model.model.embed_tokens.weight")
    r = embed.stored // embed.numel if setup.gpus == 1 else b
    llm, t = cfg.llm, setup.tokens
    widths = {
        "h": llm.hidden_size,
        "i": llm.intermediate_size,
        "q": llm.num_attention_heads * llm.head_dim,
        "kv": llm.num_key_value_heads * llm.head_dim,
        "qk_norm": int(llm.qk_norm),
    }
    per_layer = []
    for index in range(llm.num_hidden_layers):
        prefix = f"language_model.model.layers.{index}."
        suffix = GEN_SUFFIX if setup.visual_gen and llm.layer_module == "Qwen2MoTDecoderLayer" else ""
        paths = [_layer_saved(widths, linears, prefix, s, b, r, False) for s in {"", suffix}]
        per_layer.append(max(paths))
    in_flight = t * (2 * b * llm.intermediate_size + 2 * r * llm.hidden_size)  # gradients inside a layer's backward
    if plan.checkpointing:
        layers = llm.num_hidden_layers * t * r * llm.hidden_size
        layer_peak = t * max(per_layer, default=0) + in_flight
    else:
        layers, layer_peak = t * sum(per_layer), in_flight
    ce = setup.ce_tokens if setup.ce_tokens is not None else t
    text = layers + max(ce * llm.vocab_size * CE_BYTES_PER_LOGIT + t * r * llm.hidden_size, layer_peak)
    image = 0
    if hasattr(model, "vit_model"):
        vit, n_vit = cfg.vit, setup.vit_tokens if setup.vit_tokens is not None else t
        vw = {
            "h": vit.hidden_size,
            "i": vit.intermediate_size,
            "q": vit.hidden_size,
            "kv": vit.hidden_size,
            "qk_norm": 0,
        }
        vit_layers = [
            _layer_saved(vw, linears, f"{VIT_LAYERS}{k}.", "", b, b, True) for k in range(vit.num_hidden_layers)
        ]
        if plan.checkpointing:
            vit_saved = n_vit * (vit.num_hidden_layers * b * vit.hidden_size + max(vit_layers, default=0))
        else:
            vit_saved = n_vit * sum(vit_layers)
        image = layers + vit_saved + layer_peak
    dequantized = 0
    if plan.quantize != "none":
        largest = max((q.numel for q in tensors if q.quantized), default=0)
        dequantized = DEQUANT_PEAK_BYTES[plan.quantize, b] * largest  # b: 4 (fp32) or 2 (bf16, fp16)
    return max(text, image) + dequantized


def estimate_train_plan(cfg: ModelConfig, plan: TrainPlan, setup: TrainSetup, model=None) -> TrainEstimate:
    """The bytes one GPU holds for ``plan`` (``model``: the meta model of ``cfg`` and ``setup``, to reuse)."""
    model = model if model is not None else _meta_model(cfg, setup)
    tensors, linears = _inventory(model, plan, setup)
    static = _static_bytes(tensors, plan, setup)
    activations = _activation_bytes(model, cfg, linears, plan, setup, tensors)
    return TrainEstimate(
        plan=plan,
        parameters=sum(t.numel for t in tensors if not t.name.startswith("vae.") and t.unit != "replicated")
        + _vae_params(model),
        trainable=static["trainable"],
        weights=static["weights"],
        gradients=static["gradients"],
        optimizer=static["optimizer"],
        ema=static["ema"],
        activations=max(activations, static["step"]),
        overhead=OVERHEAD_BYTES["cuda" if setup.cuda else "cpu"],
    )


def _vae_params(model) -> int:
    return sum(p.numel() for p in model.vae.parameters()) if hasattr(model, "vae") else 0


def estimate_train_plans(
    cfg: ModelConfig, setup: TrainSetup, plans: list[TrainPlan] | None = None
) -> list[TrainEstimate]:
    """Every plan (or ``plans``), in :func:`all_plans` order."""
    model = _meta_model(cfg, setup)
    return [estimate_train_plan(cfg, plan, setup, model) for plan in (plans or all_plans())]


def choose_train_plan(estimates: list[TrainEstimate], budget: int, gpus: int = 1) -> TrainEstimate:
    """The first estimate that fits ``budget``; a one-line ConfigError naming the smallest plan otherwise."""
    for estimate in estimates:
        if estimate.fits(budget):
            return estimate
    if not estimates:
        raise ConfigError("no training plan to choose from")
    smallest = min(estimates, key=lambda e: e.total)
    raise ConfigError(
        f"no training plan fits {format_bytes(budget)} per GPU on {gpus} GPU(s): the smallest, {smallest.plan.label}, "
        f"needs {format_bytes(smallest.total)} per GPU; use more GPUs (FSDP2 shards the model), smaller packs "
        "(--max_num_tokens) or a larger --max_memory"
    )


# ---------------------------------------------------------------------------------------------
# The table of ``info --memory --train`` and the choice of ``train --max_memory``.


def train_memory_report(
    cfg: ModelConfig, setup: TrainSetup, budget: int | None, name: str, run_plan: TrainPlan | None = None
) -> list[str]:
    """Every plan's bytes per GPU, and which fit ``budget`` (and ``run_plan``'s, a run's own plan)."""
    from unimedvl.checkpoint.model_card import human_count

    estimates = estimate_train_plans(cfg, setup)
    where = "GPU" if setup.cuda else "host RAM (CPU)"
    ranks = ", ".join(f"{part} {setup.lora_rank[part]}" for part in LORA_PARTS)
    lines = [
        f"training memory plans: {name}, {setup.gpus} {where}(s){' with FSDP2 FULL_SHARD' if setup.gpus > 1 else ''}, "
        f"compute in {setup.dtype}, packs of {setup.tokens} tokens"
        + (f", budget {format_bytes(budget)} per GPU" if budget else ""),
        f"LoRA plans: ranks {ranks}; the LLM and ViT bases frozen; +ckpt: activation checkpointing; "
        "+ema: an EMA of the trainable weights",
    ]
    header = (
        f"{'plan':<21} {'trainable':>9} {'weights':>9} {'grads':>8} {'AdamW':>8} {'EMA':>8} {'act.':>8} "
        f"{'overhead':>8} {'total/GPU':>9}"
    )
    lines.append(header + ("  fits" if budget else ""))
    for e in estimates:
        row = (
            f"{e.plan.label:<21} {human_count(e.trainable):>9} {format_bytes(e.weights):>9} "
            f"{format_bytes(e.gradients):>8} {format_bytes(e.optimizer):>8} "
            f"{format_bytes(e.ema) if e.ema else '-':>8} {format_bytes(e.activations):>8} "
            f"{format_bytes(e.overhead):>8} {format_bytes(e.total):>9}"
        )
        lines.append(row + (f"  {'yes' if e.fits(budget) else 'no'}" if budget else ""))
    if budget:
        try:
            chosen = choose_train_plan(estimates, budget, setup.gpus)
            lines.append(
                f"first plan within {format_bytes(budget)} per GPU (the order train --max_memory tries): "
                f"{chosen.plan.label} ({format_bytes(chosen.total)})"
            )
        except ConfigError as err:
            lines.append(str(err))
    if run_plan is not None:
        own = next(e for e in estimates if e.plan == run_plan)
        verdict = f": {'fits' if own.fits(budget) else 'does not fit'} {format_bytes(budget)}" if budget else ""
        lines.append(f"this run's plan: {run_plan.label}, {format_bytes(own.total)} per GPU{verdict}")
    lines.append(
        "act.: activations of one pack (worst case: all text with a loss, or all ViT tokens), or AdamW's "
        "step buffer when larger; an estimate with a margin, see unimedvl/checkpoint/train_memory.py"
    )
    return lines


def plan_of_config(cfg) -> TrainPlan:
    """The plan a TrainConfig runs as it stands (its quantize_base, LoRA, checkpointing and EMA)."""
    quantize = getattr(cfg, "quantize_base", "none")
    method = f"qlora-{quantize}" if quantize != "none" else ("lora" if _lora_configured(cfg) else "full")
    return TrainPlan(method, bool(cfg.gradient_checkpointing), cfg.ema > 0)


def candidate_plans(cfg) -> list[TrainPlan]:
    """The plans ``--max_memory`` may pick for a TrainConfig, in order: what the config fixes is kept.

    ``quantize_base`` given: that QLoRA only; LoRA given: no full fine-tune; ``ema`` 0: no EMA plans.
    """
    quantize = getattr(cfg, "quantize_base", "none")
    if quantize != "none":
        methods = (f"qlora-{quantize}",)
    elif _lora_configured(cfg):
        methods = ("lora", "qlora-int8", "qlora-nf4")
    else:
        methods = METHODS
    return [p for p in all_plans(methods) if cfg.ema > 0 or not p.ema]


def _lora_configured(cfg) -> bool:
    return cfg.lora_rank > 0 or any((getattr(cfg, f"lora_rank_{part}", None) or 0) > 0 for part in LORA_PARTS)


def apply_max_memory(cfg, model_cfg: ModelConfig, gpus: int, cuda: bool) -> str:
    """Set ``cfg`` (a TrainConfig with ``max_memory``) to the first candidate plan that fits; the one-line notice.

    The plan decides ``quantize_base``, LoRA (rank :data:`DEFAULT_LORA_RANK` when none was given;
    the LLM and ViT bases frozen), ``gradient_checkpointing`` and the EMA (``ema`` 0 without it).
    ConfigError, naming the smallest plan and its size, when none fits.
    """
    from unimedvl.checkpoint.memory_plan import parse_memory

    budget = parse_memory(cfg.max_memory, "max_memory")
    setup = TrainSetup.from_config(cfg, gpus=gpus, cuda=cuda)
    chosen = choose_train_plan(estimate_train_plans(model_cfg, setup, candidate_plans(cfg)), budget, gpus)
    plan, changes = chosen.plan, []
    if plan.lora:
        if not _lora_configured(cfg):
            cfg.lora_rank = DEFAULT_LORA_RANK
            changes.append(f"lora_rank {DEFAULT_LORA_RANK}")
        for flag in ("freeze_llm", "freeze_vit"):
            if not getattr(cfg, flag):
                setattr(cfg, flag, True)
                changes.append(f"{flag} True")
    if plan.quantize != getattr(cfg, "quantize_base", "none"):
        cfg.quantize_base = plan.quantize
        changes.append(f"quantize_base {plan.quantize}")
    if cfg.gradient_checkpointing != plan.checkpointing:
        cfg.gradient_checkpointing = plan.checkpointing
        changes.append(f"gradient_checkpointing {plan.checkpointing}")
    if not plan.ema and cfg.ema > 0:
        cfg.ema = 0.0
        changes.append("ema 0")
    return (
        f"max_memory {format_bytes(budget)} per GPU x {gpus}: training plan {plan.label} "
        f"({format_bytes(chosen.total)} per GPU estimated)" + (f"; set {', '.join(changes)}" if changes else "")
    )
