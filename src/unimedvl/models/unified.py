"""UnifiedModel: language model + vision encoder + VAE joined into one packed sequence.

Understanding path: ViT patches -> ``vit_model`` -> ``connector`` + ``vit_pos_embed`` -> tokens.
Generation path: VAE latents -> ``vae2llm`` + ``time_embedder(t)`` + ``latent_pos_embed`` ->
tokens (generation expert); ``llm2vae`` reads the predicted velocity back out.
``forward(batch)`` returns cross-entropy and flow-matching losses as sums and token counts, so
data-parallel training can normalise by the global token count (spec section 4).

Module names are the release's, so ``ema.safetensors`` loads without a key map; the VAE sits
under ``vae`` and is saved to ``ae.safetensors`` separately (checkpoint/release.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from unimedvl.config import ModelConfig
from unimedvl.errors import ConfigError
from unimedvl.models.autoencoder import Autoencoder
from unimedvl.models.embeddings import MLPconnector, PositionEmbedding, TimestepEmbedder, patchify_latent
from unimedvl.models.language import LanguageModel
from unimedvl.models.latent_cache import LatentCache
from unimedvl.models.packed_batch import PackedBatch
from unimedvl.models.vision import VisionEncoder
from unimedvl.sampling.flow import interpolate, sample_timesteps, velocity_target


@dataclass
class FlowState:
    """Latent-side tensors of one forward, kept for losses that look at images (pixel, SSIM)."""

    x0: Tensor  # (N_vae, p*p*z) clean latent tokens (inputs given as tokens count as x_t)
    x_t: Tensor  # (N_vae, p*p*z) model inputs
    noise: Tensor  # (N_vae, p*p*z)
    t: Tensor  # (N_vae,) per-token timestep (0 for clean conditioning)
    image_of_token: Tensor  # (N_vae,) index of the VAE image each token belongs to
    loss_mask: Tensor  # (N_vae,) bool: token carries the flow loss (noised image, t > 0)


class UnifiedModel(nn.Module):
    """The unified medical vision-language model (BAGEL-7B-MoT layout)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        hidden = config.llm.hidden_size
        self.language_model = LanguageModel(config.llm, config.attn_backend)
        if config.visual_und:
            self.vit_model = VisionEncoder(config.vit, config.attn_backend)
            self.connector = MLPconnector(config.vit.hidden_size, hidden, config.connector_act)
            self.vit_pos_embed = PositionEmbedding(config.vit_max_num_patch_per_side, hidden)
        if config.visual_gen:
            self.time_embedder = TimestepEmbedder(hidden)
            self.vae2llm = nn.Linear(config.patch_latent_dim, hidden)
            self.llm2vae = nn.Linear(hidden, config.patch_latent_dim)
            self.latent_pos_embed = PositionEmbedding(config.max_latent_size, hidden)
            self.vae = Autoencoder(config.vae)
            self.vae.requires_grad_(False)  # frozen: the generation path learns in latent space
        if not any(p.is_meta for p in self.parameters()):
            self._init_heads()

    # -- weights ------------------------------------------------------------------------------

    @torch.no_grad()
    def _init_heads(self) -> None:
        if self.config.visual_gen:
            # A fresh model predicts zero velocity: llm2vae starts at zero. vae2llm keeps its
            # default init: zeroing both would start training at a saddle (each one's gradient
            # is proportional to the other), which we measured to slow the first hundreds of
            # steps several-fold.
            self.llm2vae.weight.zero_()
            self.llm2vae.bias.zero_()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Fresh weights for every part (after ``to_empty`` from the meta device)."""
        self.language_model.init_weights()
        for name, module in self.named_modules():
            if name.startswith("language_model"):
                continue
            if hasattr(module, "reset_parameters") and module is not self:
                module.reset_parameters()
        self._init_heads()

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    # -- embedding the packed sequence --------------------------------------------------------

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype (of the token embeddings, which are never quantised)."""
        return self.language_model.model.embed_tokens.weight.dtype

    def embed(
        self, batch: PackedBatch, generator: torch.Generator | None = None, latent_cache: LatentCache | None = None
    ) -> tuple[Tensor, FlowState | None]:
        """Packed input embeddings (T, hidden) and the latent-side state of the batch.

        ``latent_cache`` serves VAE encodings of images seen before (training with a frozen encoder).
        """
        device = self.language_model.lm_head.weight.device
        dtype = self.dtype
        hidden = torch.zeros(batch.sequence_length, self.config.llm.hidden_size, device=device, dtype=dtype)
        hidden = hidden.index_copy(0, batch.text_indexes, self.language_model.embed(batch.text_ids))
        if batch.vit_indexes.numel():
            if not self.config.visual_und:
                raise ConfigError("the batch has ViT images but the model was built with visual_und=False")
            features = self.vit_model(batch.vit_tokens.to(dtype), batch.vit_position_ids, batch.vit_token_lens)
            vit = self.connector(features) + self.vit_pos_embed(batch.vit_position_ids)
            hidden = hidden.index_copy(0, batch.vit_indexes, vit.to(dtype))
        flow = None
        if batch.vae_indexes.numel():
            if not self.config.visual_gen:
                raise ConfigError("the batch has VAE images but the model was built with visual_gen=False")
            flow = self._flow_inputs(batch, generator, latent_cache)
            t_embed = self.time_embedder(flow.t.to(dtype))
            latent = self.vae2llm(flow.x_t.to(dtype)) + t_embed + self.latent_pos_embed(batch.vae_position_ids)
            hidden = hidden.index_copy(0, batch.vae_indexes, latent.to(dtype))
        return hidden, flow

    @torch.no_grad()
    def encode_images(self, images: list[Tensor]) -> list[Tensor]:
        """VAE-encode images ([3, H, W] in [-1, 1]) to latent tokens, batching images of equal size."""
        out: list[Tensor | None] = [None] * len(images)
        by_size: dict[tuple[int, ...], list[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(tuple(image.shape), []).append(i)
        device = self.vae2llm.weight.device
        for indexes in by_size.values():
            stack = torch.stack([images[i] for i in indexes]).to(device)
            latents = self.vae.encode(stack)
            for i, latent in zip(indexes, latents):
                out[i] = patchify_latent(latent.float(), self.config.latent_patch_size)
        return out  # type: ignore[return-value]

    def _flow_inputs(
        self, batch: PackedBatch, generator: torch.Generator | None, latent_cache: LatentCache | None = None
    ) -> FlowState:
        device = self.vae2llm.weight.device
        pixel = [i for i, x in enumerate(batch.vae_inputs) if x.dim() == 3]
        images = [batch.vae_inputs[i] for i in pixel]
        latents = (
            self.encode_images(images) if latent_cache is None else latent_cache.encode(images, self.encode_images)
        )
        encoded = dict(zip(pixel, latents))
        tokens = [encoded[i] if i in encoded else x.to(device).float() for i, x in enumerate(batch.vae_inputs)]
        counts = torch.tensor([t.shape[0] for t in tokens], device=device)
        x_in = torch.cat(tokens)
        image_of_token = torch.repeat_interleave(torch.arange(len(tokens), device=device), counts)
        # Per-image timestep: fixed where given, logit-normal where NaN (noised training targets).
        t_image = batch.vae_timesteps.to(device).clone()
        to_sample = torch.isnan(t_image)
        if to_sample.any():
            drawn = sample_timesteps(int(to_sample.sum()), self.config.timestep_shift, generator, device="cpu")
            t_image[to_sample] = drawn.to(device)
        t = t_image[image_of_token]
        noised_token = batch.vae_noised.to(device)[image_of_token]
        # Pixel inputs of noised images are noised here; token inputs are already x_t.
        from_pixels = torch.zeros(len(tokens), dtype=torch.bool, device=device)
        from_pixels[pixel] = True
        apply_noise = noised_token & from_pixels[image_of_token]
        noise = torch.randn(x_in.shape, generator=generator, device="cpu").to(device)
        x_t = torch.where(apply_noise[:, None], interpolate(x_in, noise, t[:, None]), x_in)
        return FlowState(
            x0=x_in,
            x_t=x_t,
            noise=noise,
            t=t,
            image_of_token=image_of_token,
            loss_mask=apply_noise & (t > 0),
        )

    # -- training forward ---------------------------------------------------------------------

    def forward(
        self,
        batch: PackedBatch,
        generator: torch.Generator | None = None,
        ce_normalizer: float | None = None,
        mse_normalizer: float | None = None,
        latent_cache: LatentCache | None = None,
    ) -> dict[str, Tensor]:
        """Losses of one packed batch.

        Returns ``ce`` and ``mse`` (sums divided by the normalisers: the global token counts
        under data parallelism, the local counts by default), the raw sums and token counts,
        and ``flow`` (FlowState) for image-space losses. A batch without CE or MSE tokens gives
        an exact zero that still touches the head weights, so every rank runs the same graph.
        ``latent_cache`` reuses the VAE encodings of images seen before (see models/latent_cache.py).
        """
        hidden, flow = self.embed(batch, generator, latent_cache)
        out = self.language_model(
            hidden, batch.layout, batch.position_ids.to(hidden.device), batch.gen_mask(hidden.device)
        )

        lm_head = self.language_model.lm_head.weight
        n_ce = batch.num_ce_tokens
        if n_ce:
            logits = self.language_model.logits(out[batch.ce_indexes.to(out.device)]).float()
            per_token = F.cross_entropy(logits, batch.ce_labels.to(out.device), reduction="none")
            ce_sum = (per_token * batch.ce_weights.to(out.device)).sum()
        else:
            ce_sum = lm_head.sum() * 0.0
        result = {"ce_sum": ce_sum, "ce_tokens": torch.tensor(float(n_ce))}

        n_mse = 0
        mse_sum = None
        if flow is not None:
            n_mse = int(flow.loss_mask.sum())
            pred = self.llm2vae(out[batch.vae_indexes.to(out.device)])
            result["velocity"] = pred
            if n_mse:
                target = velocity_target(flow.x0, flow.noise)
                err = (pred.float() - target).pow(2).mean(dim=-1)
                mse_sum = err[flow.loss_mask].sum()
        if mse_sum is None:
            mse_sum = self.llm2vae.weight.sum() * 0.0 if self.config.visual_gen else lm_head.sum() * 0.0
        result.update(mse_sum=mse_sum, mse_tokens=torch.tensor(float(n_mse)), flow=flow)
        result["ce"] = ce_sum / (ce_normalizer if ce_normalizer is not None else max(n_ce, 1))
        result["mse"] = mse_sum / (mse_normalizer if mse_normalizer is not None else max(n_mse, 1))
        return result
