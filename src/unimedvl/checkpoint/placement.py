"""Where a loaded model's weights live: one device, decoder layers over several GPUs, or streamed from CPU.

Device maps (``device_map="auto" | "balanced" | JSON``) place whole decoder layers; the
embeddings, heads, ViT, connector and VAE go with layer 0 (the "main" device, where requests
are embedded and answers read). The language model then moves the activations to each layer's
device as they pass (``LanguageModel.layer_devices``), and each layer's KV cache rows are
allocated beside it (``KVCache(layer_devices=...)``): a layer-wise pipeline in which every
guidance branch of a request stays in the same batched forward.

Offload (``offload="cpu"``) keeps the decoder layers in pinned host memory and streams them:
:class:`LayerStreamer` copies layer *i* to the GPU just before it runs and, on a second CUDA
stream, starts copying layer *i + 1* while *i* computes; after the forward *i*'s copy is
released. We wrote this small loop rather than using accelerate's ``cpu_offload`` hooks because
those copy each layer synchronously when it is called (no prefetch), and because a loop over a
``ModuleList`` with two hooks is easy to check: the layer's storage tensors are put back after
every forward, so the model outside a forward is exactly the model that was loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from unimedvl.checkpoint.memory_estimate import LAYER_PREFIX, tensor_bytes
from unimedvl.checkpoint.memory_plan import DEVICE_MAP_PRESETS, LoadPlan, format_bytes
from unimedvl.checkpoint.quantization import Int8RowQuantizer, check_quantization, is_quantized_linear, quantize_linear
from unimedvl.checkpoint.weight_stream import Placement
from unimedvl.errors import ConfigError

# Share of each GPU's free memory a device map leaves for activations, the KV cache and the
# allocator (the weights get the rest).
ACTIVATION_RESERVE = 0.15


@dataclass
class Layout:
    """Where a model goes: its main device, per-layer devices (device map), offload."""

    device: torch.device  # embeddings, heads, ViT, connector, VAE (and every layer without a map)
    layer_devices: list[torch.device] | None = None  # device map: decoder layer i runs on layer_devices[i]
    offload: bool = False  # decoder layers in host memory, streamed to ``device``

    def placement(self, model: nn.Module, quantize: str, dtype: torch.dtype) -> Placement:
        """How ``model``'s checkpoint streams in: each tensor's device; int8 weights quantised block by block;
        nf4 Linear layers replaced once loaded; offloaded layers moved to host memory."""
        quantized = set()
        if quantize != "none":
            quantized = {n for n, m in model.named_modules() if isinstance(m, nn.Linear) and is_quantized_linear(n)}
        # Offloaded layers go straight to host memory, unless they are quantised: that runs on the
        # GPU first (much faster), then finish() moves them.
        to_host = self.offload and quantize == "none"

        def route(group: str) -> torch.device | None:
            if not group.startswith(LAYER_PREFIX):
                return None
            if self.layer_devices is not None:
                return self.layer_devices[int(group[len(LAYER_PREFIX) :])]
            return torch.device("cpu") if to_host else None

        def accumulate(key: str, shape, target: torch.dtype, device: torch.device):
            owner, _, local = key.rpartition(".")
            if quantize == "int8" and local == "weight" and owner in quantized:
                return Int8RowQuantizer(shape, target, device)
            return None

        pin = self.device.type == "cuda"

        def finish(name: str, module: nn.Module) -> nn.Module:
            if name in quantized:
                module = quantize_linear(module, quantize, dtype)
            if self.offload and name.startswith(LAYER_PREFIX):
                _to_host(module, pin)
            return module

        return Placement(self.device, route, finish, accumulate)

    def attach(self, model) -> None:
        """After loading: route activations over the map, or start streaming the offloaded layers."""
        lm = model.language_model
        if self.layer_devices is not None:
            lm.layer_devices = list(self.layer_devices)
        if self.offload:
            model.layer_streamer = LayerStreamer(lm.model.layers, self.device)


def _to_host(module: nn.Module, pin: bool) -> None:
    """Move a module's own tensors to (pinned, for asynchronous copies) host memory."""
    for name, p in list(module._parameters.items()):
        if p is not None:
            t = p.to("cpu")
            module._parameters[name] = nn.Parameter(t.pin_memory() if pin else t, requires_grad=False)
    for name, b in list(module._buffers.items()):
        if b is not None:
            module._buffers[name] = b.to("cpu").pin_memory() if pin else b.to("cpu")


def plan_layout(model, plan: LoadPlan, device: torch.device, dtype: torch.dtype) -> Layout:
    """The Layout of ``plan`` for ``model`` (on meta); one-line ConfigErrors for what cannot run here."""
    if plan.offload == "cpu" and device.type != "cuda":
        raise ConfigError(
            f"offload='cpu' streams the decoder layers from host memory to a CUDA GPU, and the model goes to "
            f"{device}{'' if torch.cuda.is_available() else ' (this machine has no CUDA device)'}; leave out "
            "--offload: on a CPU the weights are in host memory already"
        )
    if plan.device_map is None:
        check_quantization(plan.quantize, device)
        return Layout(device, offload=plan.offload == "cpu")
    num_layers = model.config.llm.num_hidden_layers
    if plan.device_map in DEVICE_MAP_PRESETS:
        _, per_layer, other = tensor_bytes(model, plan.quantize, torch.finfo(dtype).bits // 8)
        layers = preset_device_map(plan.device_map, [per_layer.get(i, 0) for i in range(num_layers)], other)
    else:
        layers = parse_device_map(plan.device_map, num_layers)
    for d in set(layers):
        check_quantization(plan.quantize, d)
    return Layout(layers[0], layer_devices=layers)


# ---------------------------------------------------------------------------------------------
# Device maps.


def _check_device(text: str, where: str) -> torch.device:
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{where}: {text!r} is not a device; write cuda:0, cuda:1, ... or cpu") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            have = f"{count} CUDA device(s) (cuda:0 to cuda:{count - 1})" if count else "no CUDA device"
            raise ConfigError(f"{where} names {text}, but this machine has {have}")
        device = torch.device("cuda", index)
    elif device.type != "cpu":
        raise ConfigError(f"{where}: {text!r}; a device map places layers on cuda:N or cpu")
    return device


def parse_device_map(spec: str, num_layers: int) -> list[torch.device]:
    """The device of each decoder layer from a JSON object of layer ranges, e.g. {"0-13": "cuda:0", "14-27": "cuda:1"}."""
    where = "device_map"
    try:
        mapping = json.loads(spec)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{where} is neither auto, balanced nor JSON ({err.msg} at column {err.colno}); write e.g. "
            '\'{"0-13": "cuda:0", "14-27": "cuda:1"}\''
        ) from None
    if not isinstance(mapping, dict) or not mapping:
        raise ConfigError(
            f'{where} JSON must be an object of layer ranges, e.g. {{"0-13": "cuda:0", "14-27": "cuda:1"}}'
        )
    layers: list[torch.device | None] = [None] * num_layers
    for key, value in mapping.items():
        first, _, last = str(key).partition("-")
        try:
            lo, hi = int(first), int(last or first)
        except ValueError:
            raise ConfigError(f"{where} key {key!r} is not a layer index or range (e.g. 5 or 0-13)") from None
        if not 0 <= lo <= hi < num_layers:
            raise ConfigError(f"{where} key {key!r}: the model has decoder layers 0 to {num_layers - 1}")
        device = _check_device(str(value), f"{where} {key!r}")
        for i in range(lo, hi + 1):
            if layers[i] is not None:
                raise ConfigError(f"{where} places layer {i} twice (key {key!r}); give each layer one device")
            layers[i] = device
    missing = [i for i, d in enumerate(layers) if d is None]
    if missing:
        raise ConfigError(
            f"{where} leaves layer(s) {_ranges(missing)} without a device (the model has {num_layers} decoder layers)"
        )
    return layers  # type: ignore[return-value]


def _ranges(indexes: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``3-5, 9``."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def preset_device_map(
    preset: str, layer_bytes: list[int], other_bytes: int, free: list[int] | None = None
) -> list[torch.device]:
    """``balanced``: the weights split evenly over every GPU (the main parts count on GPU 0);
    ``auto``: GPUs filled in order, each up to its free memory less ACTIVATION_RESERVE.

    ``free``: free bytes per GPU (default: asked from CUDA).
    """
    if free is None:
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device_map='{preset}' spreads the decoder layers over CUDA GPUs, and this machine "
                "has none; leave out --device-map to run on the CPU"
            )
        free = [torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())]
    n = len(free)
    if preset == "balanced":
        share = (other_bytes + sum(layer_bytes)) / n
        capacity = [share * (g + 1) for g in range(n)]  # cumulative bytes GPU g may end at
    else:
        usable = [int(f * (1 - ACTIVATION_RESERVE)) for f in free]
        capacity = [sum(usable[: g + 1]) for g in range(n)]
    out, gpu, used = [], 0, other_bytes
    for size in layer_bytes:
        # Move on while this layer would pass GPU g's cumulative share (never past the last GPU).
        while gpu < n - 1 and used + size > capacity[gpu] + 1:
            gpu += 1
        out.append(torch.device("cuda", gpu))
        used += size
    if preset == "auto" and used > capacity[-1]:
        raise ConfigError(
            f"the weights ({format_bytes(used)}) do not fit the free memory of {n} GPU(s) "
            f"({format_bytes(sum(free))}, {ACTIVATION_RESERVE:.0%} kept for activations); add --quantize int8 or "
            "nf4, or --offload cpu"
        )
    return out


# ---------------------------------------------------------------------------------------------
# Offload.


class LayerStreamer:
    """Keeps decoder layers in host memory and streams each to ``device`` for its forward, prefetching the next.

    ``layers``: the ModuleList whose members stream; their tensors at construction are the
    storage (pinned host memory when ``device`` is CUDA). On a CPU ``device`` the copies are plain
    synchronous copies (useful to test the mechanics).
    """

    def __init__(self, layers: nn.ModuleList, device: torch.device):
        self.device = torch.device(device)
        self.layers = list(layers)
        # Per layer: (owner module, tensor name, is a parameter, storage tensor).
        self.slots = [
            [(m, n, True, p) for m in layer.modules() for n, p in m._parameters.items() if p is not None]
            + [(m, n, False, b) for m in layer.modules() for n, b in m._buffers.items() if b is not None]
            for layer in self.layers
        ]
        cuda = self.device.type == "cuda"
        self.copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._ready: dict[int, tuple[list, object]] = {}
        self.copies = 0  # layers copied so far (tests and benchmarks read it)
        self._hooks = []
        for i, layer in enumerate(self.layers):
            self._hooks.append(layer.register_forward_pre_hook(partial(self._before, i)))
            self._hooks.append(layer.register_forward_hook(partial(self._after, i)))

    def remove(self) -> None:
        """Stop streaming (the layers keep their host tensors)."""
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _fetch(self, i: int) -> None:
        self.copies += 1
        storage = [s[3] for s in self.slots[i]]
        if self.copy_stream is None:
            self._ready[i] = ([t.to(self.device, copy=True) for t in storage], None)
            return
        # Ordered after everything queued so far: memory freed by an earlier layer's copy is
        # reused by this stream only once the compute that read it is done.
        self.copy_stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.copy_stream):
            copies = [t.to(self.device, non_blocking=True) for t in storage]
            event = torch.cuda.Event()
            event.record(self.copy_stream)
        self._ready[i] = (copies, event)

    def _install(self, i: int, tensors: list) -> None:
        for (module, name, is_param, _), t in zip(self.slots[i], tensors):
            if is_param:
                module._parameters[name] = t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)
            else:
                module._buffers[name] = t

    def _before(self, i: int, module, args):
        if i not in self._ready:
            self._fetch(i)
        copies, event = self._ready.pop(i)
        if event is not None:
            torch.cuda.current_stream(self.device).wait_event(event)
        self._install(i, copies)
        nxt = (i + 1) % len(self.layers)  # the first layer is prefetched for the next forward
        if nxt != i and nxt not in self._ready:
            self._fetch(nxt)
        return None

    def _after(self, i: int, module, args, output):
        self._install(i, [s[3] for s in self.slots[i]])
        return None
