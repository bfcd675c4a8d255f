"""The FastAPI application of ``unimedvl api``, and a uvicorn server in a thread (tests, benchmarks).

::

    app = create_app(model.inferencer, ServerSettings(max_batch=8), model_id="unimedvl-7b")
    with BackgroundServer(app, port=0) as server:        # 127.0.0.1, any free port
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x")

Routes: ``POST /v1/chat/completions`` (:mod:`.chat`), ``POST /v1/images/generations`` and
``/v1/images/edits`` (:mod:`.images`), ``GET /v1/models`` (the checkpoint, its image sizes,
limits and guidance presets), ``GET /health`` (no key needed), ``GET /metrics`` (Prometheus).
The batcher's worker thread starts with the application and stops with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from pathlib import Path

from fastapi import FastAPI
from starlette.responses import JSONResponse, PlainTextResponse

from unimedvl.api.batcher import Batcher, RunBatch
from unimedvl.api.chat import chat_router
from unimedvl.api.errors import install_error_handlers
from unimedvl.api.images import images_router
from unimedvl.api.metrics import CONTENT_TYPE, ServerMetrics
from unimedvl.api.middleware import BearerAuth, BodyLimit, Timing
from unimedvl.api.service import Service
from unimedvl.api.settings import ServerSettings
from unimedvl.errors import ConfigError
from unimedvl.guidance import TASK_GUIDANCE
from unimedvl.inference.inferencer import Inferencer


def model_info(inferencer: Inferencer, settings: ServerSettings) -> dict:
    """What /v1/models says about the loaded checkpoint: tasks, image sizes, limits, presets."""
    cfg = inferencer.model.config
    tasks = (["understand"] if cfg.visual_und else []) + (["edit", "generate"] if cfg.visual_gen else [])
    stride = cfg.vae_image_stride
    return {
        "tasks": tasks,
        "vae_transform": dataclasses.asdict(inferencer.vae_transform),  # every input image: this resize rule first
        "vit_transform": dataclasses.asdict(inferencer.vit_transform),  # then this one, for understanding
        "output_stride": stride,  # output sides are multiples of this
        "max_output_size": None if cfg.interpolate_pos else cfg.max_latent_size * stride,
        "default_output_size": inferencer.default_size,
        "guidance": {task: inferencer.config.preset(task).to_json() for task in TASK_GUIDANCE},  # the checkpoint's
        "presets": {task: inferencer.config.preset_names(task) for task in TASK_GUIDANCE},  # a request's "preset"
        "limits": {
            "max_tokens": settings.max_tokens,
            "max_timesteps": settings.max_timesteps,
            "max_n": settings.max_n,
            "max_images": settings.max_images,
            "max_image_pixels": settings.max_image_pixels,
            "max_body_mb": settings.max_body_mb,
            "max_batch": settings.max_batch,
        },
        "language_model": {
            "hidden_size": cfg.llm.hidden_size,
            "num_hidden_layers": cfg.llm.num_hidden_layers,
            "vocab_size": cfg.llm.vocab_size,
        },
    }


def create_app(
    inferencer: Inferencer,
    settings: ServerSettings | None = None,
    model_id: str = "unimedvl",
    created: int | None = None,
    run: RunBatch | None = None,
) -> FastAPI:
    """The application serving ``inferencer``.

    ``run`` serves one batch (default ``inferencer.run``); tests pass a wrapper around it.
    ``created``: unix time shown in /v1/models (default: now).
    """
    settings = settings or ServerSettings()
    for task in TASK_GUIDANCE:
        preset = inferencer.config.preset(task)
        if preset.num_timesteps > settings.max_timesteps:  # else every request without num_timesteps fails
            raise ConfigError(
                f"max_timesteps={settings.max_timesteps} is below the {task} preset's "
                f"{preset.num_timesteps} timesteps; raise --max-timesteps to at least that"
            )
    metrics = ServerMetrics()
    stepper = None
    if settings.step_batching and run is None:  # a custom ``run`` (tests) sees every batch whole
        from unimedvl.inference.stepping import StepBatch

        stepper = StepBatch(inferencer)
    batcher = Batcher(
        run or inferencer.run,
        metrics,
        settings.max_batch,
        settings.batch_window_ms / 1000.0,
        settings.queue_size,
        stepper,
    )
    service = Service(
        inferencer, settings, batcher, metrics, model_id, int(created or time.time()), model_info(inferencer, settings)
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        try:
            yield
        finally:
            batcher.close()

    app = FastAPI(title="UniMedVL API", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    install_error_handlers(app)  # before the first request: Starlette builds its stack then
    app.include_router(chat_router(service))
    app.include_router(images_router(service))

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        entry = {
            "id": model_id,
            "object": "model",
            "created": service.created,
            "owned_by": "unimedvl",
            "unimedvl": service.info,
        }
        return JSONResponse({"object": "list", "data": [entry]})

    @app.get("/health")
    async def health() -> JSONResponse:
        if not batcher.alive:
            return JSONResponse({"status": "stopped"}, status_code=503)
        return JSONResponse({"status": "ok"})

    @app.get("/metrics")
    async def prometheus() -> PlainTextResponse:
        return PlainTextResponse(metrics.render(), media_type=CONTENT_TYPE)

    # add_middleware wraps: the last added runs first.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuth, api_key=settings.api_key)
    app.add_middleware(Timing, metrics=metrics)
    return app


def checkpoint_identity(path: str) -> tuple[str, int]:
    """(model id, created) of a checkpoint directory: its name and modification time."""
    folder = Path(path).expanduser()
    try:
        created = int(folder.stat().st_mtime)
    except OSError:  # a hub id: no local directory
        created = int(time.time())
    return folder.name or str(path), created


class BackgroundServer:
    """uvicorn serving an app from a daemon thread; a context manager that stops it on exit."""

    def __init__(
        self,
        app: FastAPI,
        host: str = "127.0.0.1",
        port: int = 0,
        log_level: str = "warning",
        start_timeout_s: float = 60.0,
    ):
        import uvicorn

        # A bounded graceful shutdown: a client still waiting must not keep the server up forever.
        from unimedvl.api.idle_timeout import server_options

        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5, **server_options()
        )  # idle sockets are closed (idle_timeout.py)
        self.server = uvicorn.Server(config)
        self.host = host
        self.start_timeout_s = start_timeout_s
        self.thread = threading.Thread(target=self.server.run, name="unimedvl-api-uvicorn", daemon=True)

    @property
    def port(self) -> int:
        """The port the server listens on (the one picked when asked for port 0)."""
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        """The server's base URL, for clients and tests."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> BackgroundServer:
        """Start serving in a thread and wait until it accepts connections (or failed to)."""
        self.thread.start()
        deadline = time.monotonic() + self.start_timeout_s
        # uvicorn exits the thread on a failed start (port in use): stop waiting then.
        while not self.server.started and self.thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self.server.started:
            self.stop()
            raise RuntimeError(f"the API server did not start on {self.host} (see the log above)")
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Ask the server to shut down and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout_s)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


__all__ = ["BackgroundServer", "checkpoint_identity", "create_app", "model_info"]
