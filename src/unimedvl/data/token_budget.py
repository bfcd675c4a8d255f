"""The token budget validate-data checks records against: a tokenizer and the most tokens a sample may have.

A record whose text (a JSONL file) or whole planned sample (a mix: text and images after the
transforms, as the packer counts them) exceeds the budget is one that training skips, ``eval``
fails and ``ask`` refuses. A text already over the budget by its byte count is not tokenised
(:meth:`~unimedvl.tokenizer.Tokenizer.min_tokens`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from unimedvl.data.records import Record
from unimedvl.errors import DataError, UserError

if TYPE_CHECKING:
    from unimedvl.tokenizer import Tokenizer


@dataclass(frozen=True)
class TokenLimit:
    """The token budget records are checked against."""

    tokenizer: "Tokenizer"  # the model's tokenizer (a checkpoint's own, or the size's default)
    limit: int  # most tokens one sample may have
    name: str  # where the limit comes from, for messages, e.g. "max_num_tokens_per_sample=16384"

    def text_tokens(self, record: Record) -> tuple[int, bool]:
        """(tokens of the record's text pieces, exact?); a text already over the limit by its bound
        is not tokenised (the count is then that lower bound)."""
        from unimedvl.models.packed_batch import text_tokens

        pieces = [p for turn in record.turns for p in turn.parts() if isinstance(p, str)]
        bounds = [self.tokenizer.min_tokens(p) if self.tokenizer.tokens_exceed(p, self.limit) else None
                  for p in pieces]
        if any(b is not None for b in bounds):
            return sum(text_tokens(b or 0) for b in bounds), False
        return sum(text_tokens(len(self.tokenizer.encode(p))) for p in pieces), True


def sample_token_check(group, paths, model, tokens: TokenLimit,
                       sizer: Callable[[str], tuple[int, int]]) -> Callable[[Record], None]:
    """A check that measures a record of ``group`` as the packer would (DataError when over the limit);
    ``sizer`` gives an image's (width, height), raising DataError when it is unreadable."""
    from unimedvl.data.plans import Drops, SampleBuilder

    builder = SampleBuilder(tokens.tokenizer, model, group.vae_transform, group.vit_transform, sizer=sizer)

    def check(record: Record) -> None:
        try:
            measured = builder.measure(group.plan.plan(record, Drops(), paths), limit=tokens.limit)
        except DataError:
            return  # a record the type cannot plan, or an unreadable image: reported by the other checks
        if measured.num_tokens > tokens.limit:
            at_least = "" if measured.encoded else "at least "
            raise DataError(f"the sample is {at_least}{measured.num_tokens} tokens (text and images), over "
                            f"{tokens.name}: training skips it, eval fails it and ask refuses it; shorten the "
                            "text or shrink the images")

    return check


def token_limit_from_args(args: argparse.Namespace, model) -> TokenLimit | None:
    """The token budget of ``--model``: its tokenizer (a checkpoint's own, or the size's default) and the
    smaller of --max-num-tokens-per-sample and the model's context length."""
    if args.no_token_check:
        return None
    if args.max_num_tokens_per_sample < 1:
        raise UserError(f"--max-num-tokens-per-sample {args.max_num_tokens_per_sample} must be >= 1")
    if os.path.isdir(args.model):
        from unimedvl.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(args.model)
    else:
        from unimedvl.checkpoint.create import default_tokenizer

        tokenizer = default_tokenizer(model)
    context = model.llm.max_position_embeddings
    if context < args.max_num_tokens_per_sample:
        return TokenLimit(tokenizer, context, f"the model's context of {context} tokens (max_position_embeddings)")
    return TokenLimit(tokenizer, args.max_num_tokens_per_sample,
                      f"max_num_tokens_per_sample={args.max_num_tokens_per_sample}")
