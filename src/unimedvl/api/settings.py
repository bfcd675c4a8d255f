"""How the HTTP API is served and what it accepts (``unimedvl api`` flags); the limits it shares with the
web app are :mod:`unimedvl.defaults`."""

from __future__ import annotations

from dataclasses import dataclass

from unimedvl.defaults import (
    LOCAL_HOSTS,
    MAX_NEW_TOKENS,
    SERVER_HOST,
    SERVER_MAX_IMAGE_PIXELS,
    SERVER_MAX_UPLOAD_MB,
    SERVER_QUEUE_SIZE,
)
from unimedvl.errors import ConfigError


@dataclass
class ServerSettings:
    """Binding, batching and the limits every request is checked against."""

    host: str = SERVER_HOST  # interface to bind; 0.0.0.0 exposes the API to the network
    port: int = 8000  # TCP port (0: any free port, for tests)
    api_key: str | None = None  # required as "Authorization: Bearer KEY" on every route but /health
    max_batch: int = 8  # inference requests served together in one Inferencer.run
    batch_window_ms: float = 20.0  # how long the oldest waiting request waits for company
    queue_size: int = SERVER_QUEUE_SIZE  # inference requests that may wait; more are answered 503 with Retry-After
    step_batching: bool = True  # image requests (reference sampler) join the running denoising batch between steps
    max_body_mb: float = SERVER_MAX_UPLOAD_MB  # largest request body (JSON with base64 images, or multipart)
    max_image_pixels: int = (
        SERVER_MAX_IMAGE_PIXELS  # largest decoded input image (width x height), checked from headers
    )
    max_images: int = 16  # input images per request
    max_tokens: int = 1024  # largest max_tokens a chat request may ask for
    default_max_tokens: int = MAX_NEW_TOKENS  # max_tokens when a request gives none (at most max_tokens)
    max_timesteps: int = 100  # largest num_timesteps an image request may ask for
    max_n: int = 8  # largest n (choices or images) per request

    def __post_init__(self) -> None:
        for name in (
            "max_batch",
            "queue_size",
            "max_image_pixels",
            "max_images",
            "max_tokens",
            "max_timesteps",
            "max_n",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        if self.max_timesteps < 2:
            raise ConfigError(f"max_timesteps={self.max_timesteps} must be at least 2 (one Euler step)")
        if self.batch_window_ms < 0:
            raise ConfigError(f"batch_window_ms={self.batch_window_ms} must be >= 0 (0: no gathering)")
        if not self.max_body_mb > 0:
            raise ConfigError(f"max_body_mb={self.max_body_mb} must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port={self.port} must be in 0..65535")
        if self.api_key is not None and not self.api_key.strip():
            raise ConfigError("the API key is empty: pass a non-empty --api-key or leave it out")
        self.default_max_tokens = min(self.default_max_tokens, self.max_tokens)

    @property
    def max_body_bytes(self) -> int:
        """The request-body limit in bytes (``max_body_mb`` converted)."""
        return int(self.max_body_mb * 1024 * 1024)

    @property
    def local_only(self) -> bool:
        """Whether the server listens only on this machine (then an API key is optional)."""
        return self.host in LOCAL_HOSTS
