"""Inference contexts on the KV cache: what the model has read so far, one row per context.

A ``Context`` is a row of the pool's ``KVCache`` plus the next RoPE id of that row. A
conversation is one context; image generation uses three per request (``full``, ``cfg_text``,
``cfg_img``, spec unified-model.md section 5). Every update goes through ``build_packed_batch``:
the new blocks of several contexts form a one-sample-per-context batch, ``UnifiedModel.embed``
embeds it and ``forward_cached`` writes it, one forward for all contexts. The batch's rope ids
start at 0 for every sample, so each context's next rope id is added.

Text generation (``generate_text``) decodes on a scratch copy of the contexts: the contexts
themselves stay as they were, and the caller adds the finished answer with ``add`` (one prefill,
the same keys as the decoded ones), which keeps every context update on one code path. A
context's ``TextOptions`` may ask to hear each token as it comes (``on_token``, for streaming) and
to end its answer early (``stop``, for a cancelled request); neither changes the other contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from unimedvl.defaults import MAX_NEW_TOKENS, TEMPERATURE, TOP_P
from unimedvl.errors import DataError
from unimedvl.models.kv_cache import KVCache
from unimedvl.models.packed_batch import PackedBatch, SplitSpec, TextSplit, VaeImageSplit, build_packed_batch
from unimedvl.models.unified import UnifiedModel
from unimedvl.tokenizer import SpecialIds


@dataclass
class Context:
    """One context: a row of the pool's KV cache and the RoPE id its next token gets."""

    row: int  # row in ContextPool.cache
    rope: int = 0  # next RoPE id (text tokens take one each, an image block one in all)


@dataclass
class TextOptions:
    """How one context's text is decoded (greedy when temperature is 0)."""

    max_new_tokens: int = MAX_NEW_TOKENS  # stop after this many tokens if <|im_end|> has not come
    temperature: float = TEMPERATURE  # 0: greedy; > 0: sample from softmax(logits / temperature)
    top_p: float = TOP_P  # nucleus sampling: keep the smallest set of tokens with this much mass
    generator: torch.Generator | None = None  # CPU generator for sampling (per request)
    on_token: Callable[[int], None] | None = None  # called with each answer token as it is decoded (streaming)
    stop: Callable[[], bool] | None = None  # checked after each token: True ends this answer there (cancelled)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise DataError(f"max_new_tokens={self.max_new_tokens} must be >= 1")
        if self.temperature < 0:
            raise DataError(f"temperature={self.temperature} must be >= 0 (0 means greedy)")
        if not 0 < self.top_p <= 1:
            raise DataError(f"top_p={self.top_p} must be in (0, 1]")


class ContextPool:
    """A KV cache and the contexts living in it; every update is one batched forward."""

    def __init__(self, model: UnifiedModel, special: SpecialIds, capacity: int = 256):
        self.model = model
        self.special = special
        self.cache: KVCache = model.language_model.new_cache(rows=0, capacity=capacity)
        # embed() draws noise for noised images; ours are clean or fixed-t, so the draw is unused:
        # a private generator keeps the caller's global RNG untouched.
        self._scratch_rng = torch.Generator().manual_seed(0)

    @property
    def device(self) -> torch.device:
        return self.model.language_model.lm_head.weight.device

    # -- contexts ---------------------------------------------------------------------------

    def new(self) -> Context:
        """An empty context."""
        (row,) = self.cache.add_rows(1)
        return Context(row)

    def fork(self, ctx: Context) -> Context:
        """A new context holding a copy of ``ctx`` (keys copied once, rope id kept)."""
        return Context(self.cache.fork(ctx.row), ctx.rope)

    def length(self, ctx: Context) -> int:
        """Tokens (KV positions) in ``ctx``."""
        return self.cache.lengths[ctx.row]

    # -- updates ----------------------------------------------------------------------------

    def embed(self, samples: Sequence[Sequence[SplitSpec]]) -> tuple[PackedBatch, Tensor]:
        """Build and embed a batch; returns it on the model's device and its (T, hidden) embeddings."""
        batch = build_packed_batch(samples, self.special, self.model.config).to(self.device)
        hidden, _ = self.model.embed(batch, self._scratch_rng)
        return batch, hidden

    def positions(self, batch: PackedBatch, ropes: Sequence[int]) -> Tensor:
        """Absolute rope ids: the batch's per-sample ids shifted by each context's next rope id."""
        lens = torch.tensor(batch.layout.sample_lens, device=batch.position_ids.device)
        offsets = torch.tensor(list(ropes), device=lens.device).repeat_interleave(lens)
        return batch.position_ids + offsets

    @torch.no_grad()
    def add(self, contexts: Sequence[Context], splits: Sequence[SplitSpec]) -> None:
        """Append one block to each context (a text, or a clean ViT or VAE image), one forward in all.

        Text is ``<|im_start|>`` + ids + ``<|im_end|>`` (pass ``TextSplit(ids, close=True)``),
        causal; an image block has full attention inside and takes one rope id.
        """
        if len(contexts) != len(splits):
            raise DataError(f"ContextPool.add: {len(contexts)} contexts but {len(splits)} blocks")
        if not contexts:
            return
        for split in splits:
            if isinstance(split, VaeImageSplit) and split.noised:
                raise DataError("ContextPool.add: a context holds clean images only (noised=False)")
        batch, hidden = self.embed([[s] for s in splits])
        rel = batch.position_ids.split(batch.layout.sample_lens)
        self.model.language_model.forward_cached(
            hidden,
            self.positions(batch, [c.rope for c in contexts]),
            self.cache,
            rows=[c.row for c in contexts],
            query_lens=batch.layout.sample_lens,
            mode=["causal" if isinstance(s, TextSplit) else "full" for s in splits],
            write=True,
            routing=batch.gen_mask(hidden.device),
        )
        for ctx, ids in zip(contexts, rel):
            ctx.rope += int(ids.max()) + 1  # text: one id per token; an image block: one id

    # -- text generation --------------------------------------------------------------------

    @torch.no_grad()
    def generate_text(self, contexts: Sequence[Context], options: Sequence[TextOptions]) -> list[list[int]]:
        """Decode an answer per context: ``<|im_start|>`` first, stop at ``<|im_end|>``.

        Returns the token ids between the two markers (the end marker excluded). The contexts
        are left unchanged: decoding runs on a scratch copy of their rows, compacted whenever a
        row finishes so every step reads one contiguous block of rows.
        """
        if len(contexts) != len(options):
            raise DataError(f"generate_text: {len(contexts)} contexts but {len(options)} TextOptions")
        if not contexts:
            return []
        lm = self.model.language_model
        eos = self.special.eos
        longest = max(self.length(c) for c in contexts) + 1 + max(o.max_new_tokens for o in options)
        scratch = self.cache.select([c.row for c in contexts])
        scratch.reserve(longest)
        # Prefill <|im_start|> (an unclosed empty text) in every row.
        batch, hidden = self.embed([[TextSplit([])] for _ in contexts])
        ropes = [c.rope for c in contexts]
        hidden = lm.forward_cached(hidden, self.positions(batch, ropes), scratch, query_lens=1)
        active = list(range(len(contexts)))  # scratch row b holds context active[b]
        out: list[list[int]] = [[] for _ in contexts]
        next_rope = [r + 1 for r in ropes]
        while True:
            logits = lm.logits(hidden).float()  # (n_active, vocab)
            greedy = logits.argmax(-1).tolist()  # one device sync for all greedy rows
            tokens = [
                greedy[b] if options[i].temperature == 0 else _sample(logits[b], options[i])
                for b, i in enumerate(active)
            ]
            keep = []
            for b, (i, token) in enumerate(zip(active, tokens)):
                if token == eos:
                    continue
                out[i].append(token)
                if options[i].on_token is not None:
                    options[i].on_token(token)
                if len(out[i]) < options[i].max_new_tokens and not (options[i].stop and options[i].stop()):
                    keep.append(b)
            if not keep:
                return out
            if len(keep) < len(active):
                scratch = scratch.select(keep)
                scratch.reserve(longest)
                active = [active[b] for b in keep]
            ids = torch.tensor([out[i][-1] for i in active], device=hidden.device)
            pos = torch.tensor([next_rope[i] for i in active], device=hidden.device)
            for i in active:
                next_rope[i] += 1
            hidden = lm.forward_cached(lm.embed(ids), pos, scratch, query_lens=1)


def _sample(logits: Tensor, opt: TextOptions) -> int:
    """A token drawn from one row of logits (vocab,) with temperature and top-p, on the CPU."""
    probs = torch.softmax(logits.cpu() / opt.temperature, dim=-1)
    if opt.top_p < 1:
        sorted_probs, order = probs.sort(descending=True)
        # Keep a token while the mass before it is below top_p (the first one always stays).
        drop = sorted_probs.cumsum(0) - sorted_probs >= opt.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs, 1, generator=opt.generator))
