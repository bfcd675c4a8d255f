"""``unimedvl eval --batch-size auto`` (the default): how many samples to serve together.

Batching the samples of a run gives the same results as one at a time (each sample keeps its own
seed; the answers are identical and image metrics agree to float rounding, as batched kernels sum in
another order; ``tests/test_eval_batch.py`` checks it) and is faster (BENCHMARKS.md, batched inference on a CPU:
8 VQA requests 2.35x with the debug model, 1.50x with the small one; issue 30 measured 1.7-2.6x for eval).
The size is what the free memory of the compute device holds, measured after the model is loaded (so
the weights are already counted), over the memory estimate of one request
(:func:`unimedvl.checkpoint.memory_estimate.runtime_bytes`: KV cache and the largest transient at the run's
largest image and answer length), using only :data:`FREE_SHARE` of it because that estimate is a model,
not a measurement; then capped (:data:`CAPS`: beyond a few samples a CPU gains nothing) and at least 1.
"""

from __future__ import annotations

import os

FREE_SHARE = 0.5  # of the free memory, for the batch's activations and KV caches
CAPS = {"cpu": 8, "cuda": 32}  # largest automatic batch per device type


def free_bytes(device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's MemAvailable (None when unknown)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_batch_size(free: int | None, per_sample: int, device_type: str) -> int:
    """The automatic batch size for ``free`` bytes and ``per_sample`` bytes per request (1 when unknown)."""
    if not free or per_sample <= 0:
        return 1
    return max(1, min(CAPS.get(device_type, CAPS["cpu"]), int(free * FREE_SHARE) // per_sample))


def auto_batch_size(model, settings, device) -> tuple[int, str]:
    """(batch size, the one line eval prints about it) for a loaded UniMedVL ``model`` and EvalSettings."""
    import torch

    from unimedvl.checkpoint.memory_estimate import Workload, dtype_bytes, runtime_bytes
    from unimedvl.checkpoint.memory_plan import format_bytes

    device = torch.device(device)
    inferencer = model.inferencer
    workload = Workload(image_size=settings.vae_max_size, answer_tokens=settings.max_new_tokens)
    per_sample = runtime_bytes(
        inferencer.model.config, inferencer.config, workload, dtype_bytes(settings.dtype), device.type == "cuda"
    )
    free = free_bytes(device)
    size = choose_batch_size(free, per_sample, device.type)
    free_text = "unknown" if free is None else format_bytes(free)
    line = (
        f"eval: batch size {size} (auto: {free_text} free on {device}, about {format_bytes(per_sample)} per "
        f"sample, at most {CAPS.get(device.type, CAPS['cpu'])}; --batch-size N sets it)"
    )
    return size, line


__all__ = ["CAPS", "FREE_SHARE", "auto_batch_size", "choose_batch_size", "free_bytes"]
