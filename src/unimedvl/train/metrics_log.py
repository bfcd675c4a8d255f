"""Training logs: train.log (plain text), metrics.jsonl, TensorBoard scalars, a tqdm bar, validation CSV, MFU.

Only rank 0 writes. FLOPs per step are counted from the packed batch (matmuls of the experts the
tokens actually use, attention per sample, the LM head at CE positions only; forward + backward =
3x forward, recomputation not counted), so MFU = achieved FLOPs / peak of the device when the
device is in ``PEAK_BF16_FLOPS``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from unimedvl.config import ModelConfig
from unimedvl.fileio import atomic_write_text, disk_full_reported
from unimedvl.models.packed_batch import PackedBatch

log = logging.getLogger("unimedvl.train")

# Dense bf16 tensor-core peak per GPU (vendor datasheets, without sparsity).
PEAK_BF16_FLOPS = {
    "H200": 989e12,
    "H100 SXM": 989e12,
    "H100 PCIe": 756e12,
    "H100 NVL": 835e12,
    "H100": 989e12,
    "A100": 312e12,
}


def peak_flops(device: torch.device) -> float | None:
    """bf16 peak FLOP/s of ``device`` when known (None on CPU or an unlisted GPU)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_FLOPS.items():
        if all(part in name for part in key.split()):
            return value
    return None


def _linear_params_llm(cfg: ModelConfig) -> int:
    c = cfg.llm
    attn = c.hidden_size * c.head_dim * (c.num_attention_heads * 2 + c.num_key_value_heads * 2)
    mlp = 3 * c.hidden_size * c.intermediate_size
    return c.num_hidden_layers * (attn + mlp)


def _linear_params_vit(cfg: ModelConfig) -> int:
    v = cfg.vit
    return v.num_hidden_layers * (4 * v.hidden_size**2 + 2 * v.hidden_size * v.intermediate_size)


def step_flops(batches: list[PackedBatch], cfg: ModelConfig) -> float:
    """Training FLOPs (forward + backward) of the given micro-batches on one rank."""
    c = cfg.llm
    llm_params = _linear_params_llm(cfg)
    total = 0.0
    for b in batches:
        tokens = b.sequence_length
        fwd = 2 * tokens * llm_params
        # attention scores + weighted sum: 2 matmuls of 2*L*d each per query/key pair (upper bound: full)
        pairs = sum(n * n for n in b.layout.sample_lens)
        fwd += 4 * pairs * c.num_attention_heads * c.head_dim * c.num_hidden_layers
        fwd += 2 * b.num_ce_tokens * c.hidden_size * c.vocab_size
        if cfg.visual_und and b.vit_indexes.numel():
            n_vit = int(b.vit_indexes.numel())
            v = cfg.vit
            fwd += (
                2
                * n_vit
                * (
                    _linear_params_vit(cfg)
                    + v.patch_size**2 * 3 * v.hidden_size
                    + v.hidden_size * c.hidden_size
                    + c.hidden_size**2
                )
            )
            fwd += 4 * sum(n * n for n in b.vit_token_lens) * v.hidden_size * v.num_hidden_layers
        if cfg.visual_gen and b.vae_indexes.numel():
            fwd += 2 * int(b.vae_indexes.numel()) * 2 * cfg.patch_latent_dim * c.hidden_size
        total += 3 * fwd
    return total


class RunLogger:
    """Writes train.log, metrics.jsonl, TensorBoard and validation_metrics.csv under ``out_dir`` (rank 0).

    A run that starts at ``start_step`` (a resume, or a restart after a kill before the first
    checkpoint) first drops the lines of later steps from metrics.jsonl and validation_metrics.csv
    and purges them from TensorBoard: those steps are redone, and each step is logged once.
    """

    def __init__(
        self,
        out_dir: str | Path,
        enabled: bool,
        total_steps: int,
        start_step: int,
        tensorboard: bool = True,
        progress_bar: bool = True,
    ):
        self.enabled = enabled
        self.out_dir = Path(out_dir)
        self.writer = None
        self.bar = None
        self._handler: logging.Handler | None = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(start_step)
        self._handler = logging.FileHandler(self.out_dir / "train.log")
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self._handler.setLevel(logging.INFO)
        log.addHandler(self._handler)
        if log.getEffectiveLevel() > logging.INFO:
            log.setLevel(logging.INFO)  # train.log gets INFO even when the caller configured no logging
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                # purge_step: events of steps >= start_step + 1 written before the restart are dropped.
                self.writer = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=start_step + 1)
            except ImportError as err:  # optional at run time: logs still go to train.log
                log.warning("TensorBoard disabled (%s); install tensorboard to get event files", err)
        if progress_bar:  # a bar on a terminal; plain "step N/total, elapsed, ETA" lines in logs (progress.py)
            from unimedvl.progress import Progress

            self.bar = Progress(total_steps, "train", initial=start_step)

    def _truncate_after(self, start_step: int) -> None:
        """Keep only the lines of steps <= ``start_step`` (and drop a torn last line) in the step logs."""
        for name, step_of in (("metrics.jsonl", _jsonl_step), ("validation_metrics.csv", _csv_step)):
            path = self.out_dir / name
            if not path.is_file():
                continue
            lines = path.read_bytes().splitlines(keepends=True)
            header = lines[:1] if name.endswith(".csv") else []
            body = lines[len(header) :]
            kept = [line for line in body if (step := step_of(line)) is not None and step <= start_step]
            if len(kept) == len(body) and all(line.endswith(b"\n") for line in body):
                continue
            with disk_full_reported(f"rewriting {name}", self.out_dir, "free space and rerun"):
                atomic_write_text(path, b"".join(header + kept).decode("utf-8", "replace"), fsync=False)
            log.info(
                "%s: dropped %d line(s) after step %d (those steps run again)", name, len(body) - len(kept), start_step
            )

    def _append(self, name: str, text: str) -> None:
        with disk_full_reported(
            f"writing {name}",
            self.out_dir,
            "the last checkpoint is intact; free space and rerun with --auto_resume True",
        ):
            with open(self.out_dir / name, "a") as f:
                f.write(text)

    def step(self, step: int, metrics: Mapping[str, float], log_now: bool) -> None:
        """Record one training step: the progress bar always, the logs when ``log_now``."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(1, {k: float(metrics[k]) for k in ("loss", "ce", "mse") if k in metrics})
        if not log_now:
            return
        self._append("metrics.jsonl", json.dumps({"step": step, **{k: _num(v) for k, v in metrics.items()}}) + "\n")
        text = " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items())
        log.info("step %d %s", step, text)
        if self.writer is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"train/{key}", value, step)

    def validation(self, step: int, metrics: Mapping[str, float]) -> None:
        """Append one validation result to validation_metrics.csv and TensorBoard."""
        if not self.enabled:
            return
        path = self.out_dir / "validation_metrics.csv"
        buffer = io.StringIO(newline="")
        writer = csv.DictWriter(buffer, fieldnames=["step", *metrics.keys()])
        if not path.is_file():
            writer.writeheader()
        writer.writerow({"step": step, **{k: _num(v) for k, v in metrics.items()}})
        self._append("validation_metrics.csv", buffer.getvalue())
        log.info("validation step %d %s", step, " ".join(f"{k}={_fmt(v)}" for k, v in metrics.items()))
        if self.writer is not None:
            for key, value in metrics.items():
                self.writer.add_scalar(f"val/{key}", value, step)

    def close(self) -> None:
        """Flush and close the writers and detach the log file handler."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self._handler is not None:
            log.removeHandler(self._handler)
            self._handler.close()


def _jsonl_step(line: bytes) -> int | None:
    try:
        step = json.loads(line).get("step")
    except (ValueError, AttributeError):
        return None
    return step if isinstance(step, int) and line.endswith(b"\n") else None


def _csv_step(line: bytes) -> int | None:
    head = line.split(b",", 1)[0]
    return int(head) if head.strip().isdigit() and line.endswith(b"\n") else None


def _num(v: Any) -> Any:
    return float(v) if isinstance(v, (int, float)) else v


def _fmt(v: Any) -> str:
    return f"{v:.5g}" if isinstance(v, float) else str(v)


class Timer:
    """Wall-clock time between laps (step timings)."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    def lap(self) -> float:
        """Seconds since the previous lap (or the start)."""
        now = time.perf_counter()
        elapsed, self.start = now - self.start, now
        return elapsed
