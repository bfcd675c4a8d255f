"""What each memory plan costs: weight bytes from the model's shapes, activations and KV cache.

``estimate_plans(cfg, ...)`` builds the model of every plan on the meta device (no weight is
read or allocated) and counts, tensor by tensor, what loading it would place: compute-dtype bytes
for most tensors, the quantised layout of :mod:`unimedvl.checkpoint.quantization` for the Linear layers a
quantised plan replaces, and for offload the decoder layers in host memory with two of them on
the GPU (the one running and the one being prefetched).

The runtime estimate is a model of one request at a given image size and answer length, not a
measurement: the KV cache (the contexts and the scratch copy that decoding or denoising works on)
plus the largest transient of one forward (a layer's hidden states and MLP activations over the
longest block, attention scores where the CPU kernels materialise them, the VAE decoder's
full-resolution feature maps). ``bench/memory.py`` checks the weight bytes against measured
memory; the runtime part is meant to decide what fits, with a margin, not to the megabyte.
"""

from __future__ import annotations

from dataclasses import dataclass

from unimedvl.checkpoint.memory_plan import LoadPlan, candidate_plans, format_bytes, understanding_config
from unimedvl.config import ModelConfig
from unimedvl.defaults import MAX_NEW_TOKENS
from unimedvl.errors import ConfigError

# Memory a process needs besides weights and activations: on CUDA the context, cuBLAS workspace
# and allocator slack (typical of recent drivers); on a CPU the interpreter, torch and the
# tokenizer (0.36 GB measured with torch 2.13: `import torch` + the Qwen tokenizer).
OVERHEAD_BYTES = {"cuda": 500 * 10**6, "cpu": 400 * 10**6}
DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2}
LAYER_PREFIX = "language_model.model.layers."


@dataclass(frozen=True)
class Workload:
    """One request, as the runtime estimate assumes it."""

    image_size: int = 512  # side of the square input image in pixels (before the checkpoint's transforms)
    answer_tokens: int = MAX_NEW_TOKENS  # tokens of the answer (or reasoning) decoded
    prompt_tokens: int = 64  # tokens of the question or instruction

    def __post_init__(self) -> None:
        for name in ("image_size", "answer_tokens", "prompt_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class PlanEstimate:
    """The bytes one plan needs."""

    plan: LoadPlan
    label: str  # e.g. understanding-int8
    parameters: int  # parameters the plan loads
    device_weights: int  # weight bytes on the compute device (host RAM when it is a CPU)
    host_weights: int  # weight bytes kept in host memory (offloaded decoder layers)
    runtime: int  # activations + KV cache of one request (the larger of an ask and an edit)
    overhead: int  # process / CUDA context memory (OVERHEAD_BYTES)
    runnable: bool  # this machine can run the plan (nf4 and offload need CUDA)

    @property
    def device_total(self) -> int:
        """What the compute device must hold: weights, runtime, overhead."""
        return self.device_weights + self.runtime + self.overhead

    def fits(self, budget: int) -> bool:
        return self.device_total <= budget


def dtype_name(dtype) -> str:
    """``bf16`` / ``fp16`` / ``fp32`` for a dtype name or torch dtype."""
    short = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}
    name = str(dtype).removeprefix("torch.")
    return short.get(name, name)


def dtype_bytes(dtype) -> int:
    """Bytes per element of a dtype name or torch dtype."""
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_BYTES:
        raise ConfigError(f"dtype={dtype!r}; choose one of fp32, bf16, fp16")
    return DTYPE_BYTES[name]


def tensor_bytes(model, quantize: str, element_bytes: int) -> tuple[int, dict[int, int], int]:
    """(parameters, bytes per decoder layer, bytes of everything else) of ``model`` (meta is fine) under
    ``quantize``: compute-dtype bytes, or the quantised layout for the Linear layers a plan replaces."""
    from torch import nn

    from unimedvl.checkpoint.quantization import is_quantized_linear, quantized_weight_bytes

    seen: set[int] = set()
    params = other = 0
    layers: dict[int, int] = {}
    for name, module in model.named_modules():
        prefix = f"{name}." if name else ""
        tensors = [(n, t, True) for n, t in module.named_parameters(recurse=False)]
        tensors += [(n, t, False) for n, t in module.named_buffers(recurse=False)]
        for local, tensor, is_param in tensors:
            if id(tensor) in seen:  # tied weights are stored once
                continue
            seen.add(id(tensor))
            params += tensor.numel() if is_param else 0
            if quantize != "none" and local == "weight" and isinstance(module, nn.Linear) and is_quantized_linear(name):
                size = quantized_weight_bytes(*tensor.shape, quantize)
            else:
                size = tensor.numel() * (element_bytes if tensor.is_floating_point() else tensor.element_size())
            key = prefix + local
            if key.startswith(LAYER_PREFIX):
                index = int(key[len(LAYER_PREFIX) :].split(".", 1)[0])
                layers[index] = layers.get(index, 0) + size
            else:
                other += size
    return params, layers, other


def stored_bytes(tensor) -> int:
    """Bytes a loaded tensor occupies: a tensor subclass (torchao int8) counts its inner tensors, a
    bitsandbytes 4-bit weight its packed data and its block scales."""
    if hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(stored_bytes(getattr(tensor, n)) for n in names if getattr(tensor, n) is not None)
    size = tensor.numel() * tensor.element_size()
    state = getattr(tensor, "quant_state", None)
    while state is not None:  # bitsandbytes: absmax per block, then the nested (double) quantisation
        size += state.absmax.numel() * state.absmax.element_size()
        state = getattr(state, "state2", None)
    return size


def loaded_weight_bytes(model) -> tuple[int, int, int]:
    """(all bytes, bytes of the decoder layers, number of decoder layers) of a loaded model's tensors."""
    seen: set[int] = set()
    total = in_layers = 0
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        size = stored_bytes(tensor)
        total += size
        in_layers += size if name.startswith(LAYER_PREFIX) else 0
    return total, in_layers, model.config.llm.num_hidden_layers


def weight_bytes(cfg: ModelConfig, plan: LoadPlan, element_bytes: int) -> tuple[int, int, int]:
    """(parameters, device bytes, host bytes) of loading ``cfg`` with ``plan`` (from meta shapes)."""
    import torch

    from unimedvl.models.unified import UnifiedModel

    if plan.understanding_only:
        cfg = understanding_config(cfg)
    with torch.device("meta"):
        model = UnifiedModel(cfg)
    params, layers, other = tensor_bytes(model, plan.quantize, element_bytes)
    in_layers = sum(layers.values())
    if plan.offload == "cpu":
        # The running layer and the prefetched next one are on the GPU; all of them in host memory.
        return params, other + 2 * max(layers.values(), default=0), in_layers
    return params, other + in_layers, 0


def runtime_bytes(cfg: ModelConfig, inference, workload: Workload, element_bytes: int, cuda: bool) -> int:
    """Activations + KV cache of the largest request the model serves (an ask; an edit too with generation).

    ``inference``: the checkpoint's InferenceConfig (its transforms decide the token counts).
    """
    llm, px = cfg.llm, workload.image_size
    kv_per_token = llm.num_hidden_layers * 2 * llm.num_key_value_heads * llm.head_dim * element_bytes

    def layer_transient(tokens: int) -> int:  # residual, normed input, q/k/v/out, three MLP-wide tensors
        return tokens * (4 * llm.hidden_size + 3 * llm.intermediate_size) * element_bytes

    def scores(rows: int, queries: int, keys: int, heads: int) -> int:
        # CUDA SDPA kernels stream the scores; the CPU paths can hold them (fp32) for a layer.
        return 0 if cuda else rows * heads * queries * keys * 4

    vae_w, vae_h = inference.vae_transform.target_size(px, px)
    n_vit = 0
    vit_transient = 0
    if cfg.visual_und:
        rows, cols = inference.vit_transform.grid_size(vae_w, vae_h)
        n_vit = rows * cols
        v = cfg.vit
        vit_transient = n_vit * (4 * v.hidden_size + 2 * v.intermediate_size) * element_bytes + scores(
            1, n_vit, n_vit, v.num_attention_heads
        )
    text = workload.prompt_tokens + workload.answer_tokens
    ask_context = n_vit + 2 + text
    logits = llm.vocab_size * 4 * 2  # last-token logits in fp32, and their softmax / argmax copy
    # The context's rows and generate_text's scratch copy of them.
    ask = (
        2 * ask_context * kv_per_token
        + max(vit_transient, layer_transient(n_vit + 2) + scores(1, n_vit + 2, n_vit + 2, llm.num_attention_heads))
        + logits
    )
    if not cfg.visual_gen:
        return ask
    stride = cfg.vae_image_stride
    n_vae = (vae_h // stride) * (vae_w // stride) + 2
    full = n_vae + n_vit + 2 + workload.prompt_tokens
    contexts = full + (n_vae + n_vit + 2) + workload.prompt_tokens  # full, cfg_text, cfg_img
    # The pool and the denoiser's copy of the three rows, each with room for the latent query.
    edit_kv = 2 * (contexts + 3 * n_vae) * kv_per_token
    query = layer_transient(3 * n_vae) + scores(3, n_vae, full + n_vae, llm.num_attention_heads)
    vae_decode = vae_w * vae_h * cfg.vae.ch * 3 * element_bytes  # the decoder's full-resolution feature maps
    edit = edit_kv + max(query, vae_decode, layer_transient(n_vae)) + logits
    return max(ask, edit)


def estimate_plans(
    cfg: ModelConfig,
    inference,
    workload: Workload,
    dtype: str = "bf16",
    cuda: bool = True,
    runnable_cuda: bool = False,
    components: str | None = None,
) -> list[PlanEstimate]:
    """Every plan (or those of ``components``), cheapest first, for a ``cuda`` or CPU compute device.

    ``runnable_cuda``: whether this machine has CUDA (plans that need it are marked not runnable).
    """
    element = dtype_bytes(dtype)
    out = []
    for plan in candidate_plans(components, cuda=cuda):
        plan_cfg = understanding_config(cfg) if plan.understanding_only else cfg
        params, device, host = weight_bytes(cfg, plan, element)
        out.append(
            PlanEstimate(
                plan=plan,
                label=plan.label(dtype),
                parameters=params,
                device_weights=device,
                host_weights=host,
                runtime=runtime_bytes(plan_cfg, inference, workload, element, cuda),
                overhead=OVERHEAD_BYTES["cuda" if cuda else "cpu"],
                runnable=runnable_cuda or not plan.needs_cuda,
            )
        )
    return out


def choose_plan(estimates: list[PlanEstimate], budget: int, runnable_only: bool = True) -> PlanEstimate:
    """The first (cheapest) plan that fits ``budget`` (of those this machine runs, by default); a one-line
    ConfigError naming the smallest plan and its size when none does."""
    runnable = [e for e in estimates if e.runnable or not runnable_only]
    for estimate in runnable:
        if estimate.fits(budget):
            return estimate
    smallest = min(runnable or estimates, key=lambda e: e.device_total)
    raise ConfigError(
        f"no memory plan fits {format_bytes(budget)}: the smallest, {smallest.label}, needs "
        f"{format_bytes(smallest.device_total)} (weights {format_bytes(smallest.device_weights)}); "
        "raise the budget or use a machine with more memory"
    )


def resolve_plan(
    cfg: ModelConfig | None,
    inference,
    device,
    dtype,
    *,
    components: str = "all",
    quantize: str | None = None,
    offload: str | None = None,
    device_map: str | None = None,
    max_memory=None,
    workload: Workload | None = None,
) -> tuple[LoadPlan, str | None]:
    """The LoadPlan of these arguments and, with ``max_memory``, the cheapest plan that fits it plus a
    one-line notice saying which was chosen (None without ``max_memory``).

    ``quantize`` / ``offload`` left at None are "none", or free choices of the budget search;
    given, they constrain it. ``cfg`` (the model's sizes) is read only with ``max_memory``.
    """
    import torch

    from unimedvl.checkpoint.memory_plan import parse_memory

    if max_memory is None:
        return LoadPlan(components, quantize or "none", offload or "none", device_map), None
    if device_map is not None:
        raise ConfigError(
            "max_memory chooses a plan for one device; with a device_map, give the layers' devices "
            "instead (or leave out device_map)"
        )
    budget = parse_memory(max_memory)
    device = torch.device(device)
    name = dtype_name(dtype)
    estimates = [
        e
        for e in estimate_plans(
            cfg,
            inference,
            workload or Workload(),
            name,
            cuda=device.type == "cuda",
            runnable_cuda=device.type == "cuda",
            components=components,
        )
        if quantize in (None, e.plan.quantize) and offload in (None, e.plan.offload)
    ]
    chosen = choose_plan(estimates, budget)
    notice = (
        f"max_memory={format_bytes(budget)}: loading {chosen.label} ({format_bytes(chosen.device_weights)} of "
        f"weights, {format_bytes(chosen.device_total)} with activations and overhead on {device})"
    )
    return chosen.plan, notice
