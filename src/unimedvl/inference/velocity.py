"""The model as the sampler sees it: the guided velocity of the latent queries of several requests.

``GuidedVelocity`` evaluates the guidance branches (cond, text_uncond, img_uncond) of every
request's latent query against its contexts in the KV cache, one forward per call; a step cache
(:mod:`unimedvl.sampling`) may ask for some of the requests only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from unimedvl.inference.context import Context, ContextPool
from unimedvl.models.packed_batch import VaeImageSplit, build_packed_batch

_SLOTS = ("text_uncond", "cond", "img_uncond")  # cache row blocks: cfg_text, full, cfg_img


class GuidedVelocity:
    """The velocity of every request's latent query under the guidance branches asked for.

    Rows are laid out as [cfg_text of all requests, full of all, cfg_img of all], so every
    combination of branches the sampler can ask for (cond; cond + text; cond + img; all three)
    is one contiguous block of rows: one forward per call, attention reads cache views.
    The query (``<|vision_start|>`` + latents + ``<|vision_end|>``, one rope id per context) is
    read-only against the cache; the velocity is read at the latent tokens only. A step cache
    may ask for some requests only (``members``): their rows of the same cache, one forward.
    """

    takes_members = True  # unimedvl.sampling.sample may evaluate a subset of the requests

    def __init__(
        self, pool: ContextPool, contexts: Sequence[tuple[Context, Context, Context]], grids: Sequence[tuple[int, int]]
    ):
        """contexts: (full, cfg_text, cfg_img) per request; grids: latent token grid (h, w) per request."""
        self.model = pool.model
        self.pool = pool
        n = len(grids)
        self.order = [c[1] for c in contexts] + [c[0] for c in contexts] + [c[2] for c in contexts]
        self.cache = pool.cache.select([c.row for c in self.order])  # one copy, then never again
        self.grids = list(grids)
        self.num_requests = n
        self._queries: dict[tuple[int, ...], _Query] = {}
        query = self._query(tuple(range(n)))
        self.counts = query.counts
        self.cache.reserve(max(self.cache.lengths) + max(query.query_lens))

    def _query(self, members: tuple[int, ...]) -> _Query:
        """The packed latent query of ``members`` (built once per set of requests)."""
        if members not in self._queries:
            dim = self.model.config.patch_latent_dim
            grids = [self.grids[i] for i in members]
            samples = [
                [VaeImageSplit(tokens=torch.zeros(h * w, dim), grid=(h, w), noised=True, timestep=1.0)]
                for h, w in grids
            ]
            batch = build_packed_batch(samples, self.pool.special, self.model.config).to(self.pool.device)
            n = self.num_requests
            positions = [self.pool.positions(batch, [self.order[s * n + i].rope for i in members]) for s in range(3)]
            counts = [h * w for h, w in grids]
            self._queries[members] = _Query(
                members,
                batch,
                counts,
                batch.layout.sample_lens,
                positions,
                batch.gen_mask(self.pool.device),
                batch.vae_indexes,
                torch.tensor([0] + counts[:-1]).cumsum(0),
            )
        return self._queries[members]

    def _embed(self, query: _Query, x: Tensor, t: Tensor) -> Tensor:
        t_image = t[query.first_token.to(t.device)].float()
        batch = dataclasses.replace(query.batch, vae_inputs=list(x.split(query.counts)), vae_timesteps=t_image)
        hidden, _ = self.model.embed(batch, self.pool._scratch_rng)
        return hidden

    @torch.no_grad()
    def step_input(self, x: Tensor, t: Tensor) -> Tensor:
        """The latent tokens as they enter the first layer (latents and timestep embedded): (N, hidden)."""
        query = self._query(tuple(range(self.num_requests)))
        return self._embed(query, x, t)[query.latent_index].float()

    @torch.no_grad()
    def __call__(
        self, x: Tensor, t: Tensor, branches: Sequence[str], members: Sequence[int] | None = None
    ) -> dict[str, Tensor]:
        """x: (N, p*p*z) packed latents of the requests (all, or ``members``); t: (N,) per token ->
        {branch: (N, p*p*z)}."""
        query = self._query(tuple(range(self.num_requests)) if members is None else tuple(members))
        slots = sorted(_SLOTS.index(b) for b in branches)
        hidden = self._embed(query, x, t)
        k, n, T = len(slots), self.num_requests, query.batch.sequence_length
        out = self.model.language_model.forward_cached(
            hidden.repeat(k, 1),
            torch.cat([query.positions[s] for s in slots]),
            self.cache,
            rows=[s * n + i for s in slots for i in query.members],
            query_lens=query.query_lens * k,
            mode="full",
            write=False,
            routing=query.gen_mask.repeat(k),
        )
        v = self.model.llm2vae(out.view(k, T, -1)[:, query.latent_index]).float()  # (k, N, p*p*z)
        return {_SLOTS[s]: v[i] for i, s in enumerate(slots)}


@dataclass
class _Query:
    """The latent query of some requests: packed batch, rope ids per branch slot, where the latents are."""

    members: tuple[int, ...]
    batch: Any
    counts: list[int]
    query_lens: list[int]
    positions: list[Tensor]
    gen_mask: Tensor
    latent_index: Tensor
    first_token: Tensor
