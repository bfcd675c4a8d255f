"""Image-space losses for restoration fine-tuning (spec medical.md section 4): pixel L1/L2 and SSIM.

From one forward's FlowState and predicted velocity: x0_hat = x_t - t * v_hat per latent token,
unpatchified per image and decoded by the (frozen) VAE in chunks; compared in [0, 1] with the
ground-truth image (the original pixels when the batch carries them, else the decoded clean
latent). Each noised image i gets the weight clamp((max_t - t_i) / max_t, 0, 1), so only
low-noise samples count; images whose loss is not finite are dropped (counted, not propagated).

Reduction: sum_i w_i * loss_i / N, with N the number of noised images of the whole optimizer
step on all ranks (like CE and MSE, which divide by global token counts). The SSIM term's
gradient back into the VAE decoder is multiplied by ``ssim_grad_scale`` (SSIM gradients are
hundreds of times larger than L1/L2 ones).

The prediction is not clamped to [0, 1]: clamping would zero the gradient of exactly the pixels
that are furthest out of range.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from unimedvl.models.embeddings import unpatchify_latent
from unimedvl.models.packed_batch import PackedBatch
from unimedvl.sampling.flow import estimate_clean


@dataclass
class PixelLossConfig:
    """Weights and cut-offs of the image-space losses."""

    pixel_weight: float = 0.0  # weight of L1/L2
    pixel_type: str = "l2"  # l1 | l2
    pixel_max_t: float = 0.3  # images with t >= max_t get no pixel loss
    ssim_weight: float = 0.0  # weight of 1 - SSIM
    ssim_max_t: float = 0.1  # images with t >= max_t get no SSIM loss
    ssim_grad_scale: float = 0.1  # scale of the SSIM gradient through the VAE
    decode_chunk: int = 4  # images per decode call

    @property
    def enabled(self) -> bool:
        """Whether any pixel-space loss is on (otherwise no decoding is paid for)."""
        return self.pixel_weight > 0 or self.ssim_weight > 0


def noise_weight(t: Tensor, max_t: float) -> Tensor:
    """clamp((max_t - t) / max_t, 0, 1): 1 at t = 0, 0 from t = max_t on."""
    return ((max_t - t) / max_t).clamp(0.0, 1.0)


class _ScaleGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


def scale_grad(x: Tensor, scale: float) -> Tensor:
    """Identity forward; gradient multiplied by ``scale``."""
    return _ScaleGrad.apply(x, scale)


def pixel_losses(
    vae, batch: PackedBatch, out: dict, cfg: PixelLossConfig, num_images: float, latent_patch_size: int, z_channels: int
) -> dict[str, Tensor]:
    """Pixel and SSIM loss terms of one forward (already divided by ``num_images``).

    ``vae``: the autoencoder (``decode``); ``out``: UnifiedModel.forward's result (``velocity``,
    ``flow``). Returns ``pixel``, ``ssim`` (differentiable scalars; exact zeros when no image
    qualifies) and the counts ``pixel_images``, ``ssim_images``, ``dropped`` (non-finite).
    """
    flow = out.get("flow")
    velocity = out.get("velocity")
    anchor = velocity.sum() * 0.0 if velocity is not None else torch.zeros(())
    result = {
        "pixel": anchor,
        "ssim": anchor.clone(),
        "pixel_images": torch.zeros(()),
        "ssim_images": torch.zeros(()),
        "dropped": torch.zeros(()),
    }
    if flow is None or velocity is None or not cfg.enabled:
        return result
    x0_hat = estimate_clean(flow.x_t.float(), velocity.float(), flow.t.float()[:, None])
    counts = [h * w for h, w in batch.vae_grids]
    starts = [0]
    for c in counts[:-1]:
        starts.append(starts[-1] + c)
    jobs = []  # (image index, t, pixel weight, ssim weight)
    for i, noised in enumerate(batch.vae_noised.tolist()):
        if not noised:
            continue
        t = flow.t[starts[i]].float()
        wp = noise_weight(t, cfg.pixel_max_t) if cfg.pixel_weight > 0 else torch.zeros(())
        ws = noise_weight(t, cfg.ssim_max_t) if cfg.ssim_weight > 0 else torch.zeros(())
        if float(wp) > 0 or float(ws) > 0:
            jobs.append((i, wp.to(x0_hat.device), ws.to(x0_hat.device)))
    pix_total, ssim_total = result["pixel"], result["ssim"]
    n_pix = n_ssim = dropped = 0
    for start in range(0, len(jobs), cfg.decode_chunk):
        chunk = jobs[start : start + cfg.decode_chunk]
        by_shape: dict[tuple[int, int], list] = {}
        for job in chunk:
            by_shape.setdefault(batch.vae_grids[job[0]], []).append(job)
        for (h, w), group in by_shape.items():
            latents = torch.stack(
                [
                    unpatchify_latent(x0_hat[starts[i] : starts[i] + counts[i]], h, w, latent_patch_size, z_channels)
                    for i, _, _ in group
                ]
            )
            pred = (vae.decode(latents).float() + 1) / 2  # (B, 3, H, W), [0, 1] when in range
            target = torch.stack(
                [
                    _ground_truth(vae, batch, flow, i, starts[i], counts[i], h, w, latent_patch_size, z_channels)
                    for i, _, _ in group
                ]
            ).to(pred)
            wp = torch.stack([g[1] for g in group])
            ws = torch.stack([g[2] for g in group])
            if cfg.pixel_weight > 0:
                diff = pred - target
                per = (diff.abs() if cfg.pixel_type == "l1" else diff.pow(2)).flatten(1).mean(1)
                ok = torch.isfinite(per) & (wp > 0)
                dropped += int((~torch.isfinite(per) & (wp > 0)).sum())
                pix_total = pix_total + torch.where(ok, per * wp, torch.zeros_like(per)).sum()
                n_pix += int(ok.sum())
            if cfg.ssim_weight > 0:
                s = ssim(scale_grad(pred, cfg.ssim_grad_scale), target)
                per = 1 - s
                ok = torch.isfinite(per) & (ws > 0)
                dropped += int((~torch.isfinite(per) & (ws > 0)).sum())
                ssim_total = ssim_total + torch.where(ok, per * ws, torch.zeros_like(per)).sum()
                n_ssim += int(ok.sum())
    norm = max(float(num_images), 1.0)
    result.update(
        pixel=pix_total / norm,
        ssim=ssim_total / norm,
        pixel_images=torch.tensor(float(n_pix)),
        ssim_images=torch.tensor(float(n_ssim)),
        dropped=torch.tensor(float(dropped)),
    )
    return result


@torch.no_grad()
def _ground_truth(
    vae,
    batch: PackedBatch,
    flow,
    i: int,
    start: int,
    count: int,
    h: int,
    w: int,
    latent_patch_size: int,
    z_channels: int,
) -> Tensor:
    """The clean image of VAE image ``i`` in [0, 1]: its pixels, or the decode of its clean latent."""
    source = batch.vae_inputs[i]
    if source.dim() == 3:
        return ((source.float() + 1) / 2).to(flow.x0.device)
    latent = unpatchify_latent(flow.x0[start : start + count].float(), h, w, latent_patch_size, z_channels)
    return ((vae.decode(latent[None]).float() + 1) / 2)[0]


def count_noised_images(batch: PackedBatch) -> int:
    """Images carrying the flow loss (normaliser of the pixel losses)."""
    return int(batch.vae_noised.sum()) if batch.vae_noised.numel() else 0


def count_mse_tokens(batch: PackedBatch) -> int:
    """Latent tokens that will carry the flow loss: noised images given as pixels (matches FlowState.loss_mask)."""
    return sum(
        h * w
        for (h, w), noised, x in zip(batch.vae_grids, batch.vae_noised.tolist(), batch.vae_inputs)
        if noised and x.dim() == 3
    )


def ce_weight_sum(batch: PackedBatch) -> float:
    """Sum of the CE token weights (the token count under ``token`` weighting)."""
    return float(batch.ce_weights.sum()) if batch.ce_weights.numel() else 0.0


# ---------------------------------------------------------------------------------------------
# Differentiable SSIM: the trainer's SSIM term and train-autoencoder's (evaluation uses
# scikit-image's definition, eval.image_metrics.ssim).


def gaussian_window(size: int, sigma: float, device=None, dtype=torch.float32) -> Tensor:
    """The normalised 1-D Gaussian of ``size`` taps (the 2-D window is its outer product)."""
    coords = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(x: Tensor, y: Tensor, window_size: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """Mean SSIM per image of (B, C, H, W) tensors in [0, data_range] -> (B,).

    Gaussian window (separable, shrunk to the image for small images), valid region only,
    K1 = 0.01, K2 = 0.03.
    """
    channels = x.shape[1]
    size = min(window_size, x.shape[-1], x.shape[-2])
    g = gaussian_window(size, sigma, x.device, x.dtype)
    kernel_h = g.view(1, 1, 1, -1).expand(channels, 1, 1, size)
    kernel_v = g.view(1, 1, -1, 1).expand(channels, 1, size, 1)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(z: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(z, kernel_h, groups=channels), kernel_v, groups=channels)

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).flatten(1).mean(1)
