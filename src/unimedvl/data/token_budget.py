"""The token budget validate-data checks records against: a tokenizer and the most tokens a sample may have.

A record whose text (a JSONL file) or whole planned sample (a mix: text and images after the
transforms, as the packer counts them) exceeds the budget is one that training skips, ``eval``
fails and ``ask`` refuses. A text already over the budget by its byte count is not tokenised
(:meth:`~unimedvl.tokenizer.Tokenizer.min_tokens`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from unimedvl.data.records import Record
from unimedvl.errors import DataError

if TYPE_CHECKING:
    from unimedvl.tokenizer import Tokenizer


@dataclass(frozen=True)
class TokenLimit:
    """The token budget records are checked against."""

    tokenizer: Tokenizer  # the model's tokenizer (a checkpoint's own, or the size's default)
    limit: int  # most tokens one sample may have
    name: str  # where the limit comes from, for messages, e.g. "max_num_tokens_per_sample=16384"

    def text_tokens(self, record: Record) -> tuple[int, bool]:
        """(tokens of the record's text pieces, exact?); a text already over the limit by its bound
        is not tokenised (the count is then that lower bound)."""
        from unimedvl.models.packed_batch import text_tokens

        pieces = [p for turn in record.turns for p in turn.parts() if isinstance(p, str)]
        bounds = [self.tokenizer.min_tokens(p) if self.tokenizer.tokens_exceed(p, self.limit) else None for p in pieces]
        if any(b is not None for b in bounds):
            return sum(text_tokens(b or 0, close=True) for b in bounds), False
        return sum(text_tokens(len(self.tokenizer.encode(p)), close=True) for p in pieces), True


def sample_token_check(
    group, paths, model, tokens: TokenLimit, sizer: Callable[[str], tuple[int, int]]
) -> Callable[[Record], None]:
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
            raise DataError(
                f"the sample is {at_least}{measured.num_tokens} tokens (text and images), over "
                f"{tokens.name}: training skips it, eval fails it and ask refuses it; shorten the "
                "text or shrink the images"
            )

    return check


def token_limit(model_spec: str | os.PathLike[str], model, max_tokens: int) -> TokenLimit:
    """The token budget of a model: its tokenizer (a checkpoint directory's own, else the size's default,
    :func:`unimedvl.checkpoint.create.default_tokenizer`) and the smaller of ``max_tokens`` and the
    model's context length. ``model`` is the ModelConfig of ``model_spec`` (a checkpoint directory, a
    size name or a model YAML)."""
    if os.path.isdir(model_spec):
        from unimedvl.tokenizer import Tokenizer

        tokenizer = Tokenizer.from_dir(model_spec)
    else:
        from unimedvl.checkpoint.create import default_tokenizer

        tokenizer = default_tokenizer(model)
    context = model.llm.max_position_embeddings
    if context < max_tokens:
        return TokenLimit(tokenizer, context, f"the model's context of {context} tokens (max_position_embeddings)")
    return TokenLimit(tokenizer, max_tokens, f"max_num_tokens_per_sample={max_tokens}")
