"""LatentCache: each distinct VAE input image is encoded once per run and its latent tokens reused.

Training encodes every VAE image with the frozen encoder's posterior mean (no sampling; the
encoder never trains, ``freeze_vae False`` only frees the decoder), so a latent computed once is
the latent of every later epoch: only the flow noise and timestep change, and those are drawn
after encoding. A small model spends a large share of its step in the VAE encoder (on the demo,
about 40% of a CPU step): the cache removes it after the first epoch.

Images are keyed by their content (shape, dtype and a BLAKE2 digest of the pixels), so nothing
upstream has to name them, and the same picture used twice (an input that is also another
record's target) is encoded once. The cache stops adding entries at ``max_bytes`` (the latents
already kept stay), so memory is bounded however large the data set is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from torch import Tensor

Encoder = Callable[[list[Tensor]], list[Tensor]]


class LatentCache:
    """Content-keyed store of encoded latent tokens, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int):
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._store: dict[tuple, Tensor] = {}

    def __len__(self) -> int:
        return len(self._store)

    @staticmethod
    def key(image: Tensor) -> tuple:
        """(shape, dtype, digest of the pixels): equal for equal images wherever they come from."""
        pixels = image.detach().contiguous().cpu().numpy()
        return tuple(image.shape), str(image.dtype), hashlib.blake2b(pixels.tobytes(), digest_size=16).digest()

    def encode(self, images: Sequence[Tensor], encoder: Encoder) -> list[Tensor]:
        """Latent tokens of ``images``: cached ones looked up, the others encoded together by ``encoder``."""
        keys = [self.key(image) for image in images]
        found = {k: self._store[k] for k in keys if k in self._store}
        missing = list(dict.fromkeys(k for k in keys if k not in found))  # an image twice is encoded once
        self.hits += len(keys) - len(missing)
        self.misses += len(missing)
        if missing:
            first = {k: keys.index(k) for k in missing}
            for k, latent in zip(missing, encoder([images[first[k]] for k in missing])):
                found[k] = latent
                self._keep(k, latent)
        return [found[k] for k in keys]

    def _keep(self, key: tuple, latent: Tensor) -> None:
        size = latent.numel() * latent.element_size()
        if key not in self._store and self.bytes + size <= self.max_bytes:
            self._store[key] = latent.detach()
            self.bytes += size

    @property
    def hit_rate(self) -> float:
        """Share of lookups served from the cache so far (0 before the first)."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0
