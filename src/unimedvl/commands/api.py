"""``unimedvl api``: an OpenAI-compatible HTTP API on a checkpoint, batching concurrent requests.

::

    unimedvl api --model DIR                               # http://127.0.0.1:8000/v1, this machine only
    UNIMEDVL_API_KEY=secret unimedvl api --model DIR --host 0.0.0.0 --port 8080
    unimedvl api --model DIR --max-batch 16 --batch-window-ms 30 --queue-size 128

Routes: POST /v1/chat/completions, /v1/images/generations, /v1/images/edits; GET /v1/models,
/health, /metrics. Binds to 127.0.0.1 unless --host is given; with --api-key (or
$UNIMEDVL_API_KEY, which keeps the key out of the process list) every route but /health needs
"Authorization: Bearer KEY". Images travel inside the requests (base64 data URLs, multipart);
the server fetches nothing.
"""

from __future__ import annotations

import argparse
import os

from unimedvl.api.settings import ServerSettings
from unimedvl.commands.inference import model_options
from unimedvl.config import field_docs

KEY_ENV = "UNIMEDVL_API_KEY"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "api",
        help="serve an OpenAI-compatible HTTP API (chat, images) on a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    docs, defaults = field_docs(ServerSettings), ServerSettings()
    model_options(p, defaults.max_image_pixels, " for a server; the library's is 16384 x 16384")
    g = p.add_argument_group("server")
    g.add_argument("--host", default=defaults.host, help=docs.get("host", "") + " (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=defaults.port, help=docs.get("port", "") + f" (default {defaults.port})")
    g.add_argument(
        "--served-model-name",
        default=None,
        metavar="NAME",
        help='the model name clients send ("model"); others get 404 as from OpenAI or vLLM '
        "(default: the checkpoint folder's name)",
    )
    g.add_argument("--api-key", default=None, metavar="KEY", help=docs.get("api_key", "") + f" (default ${KEY_ENV})")
    for name, kind in (
        ("max_batch", int),
        ("batch_window_ms", float),
        ("queue_size", int),
        ("max_body_mb", float),
        ("max_images", int),
        ("max_tokens", int),
        ("max_timesteps", int),
    ):
        default = getattr(defaults, name)
        g.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=default,
            help=f"{docs.get(name, name)} (default {default:g})"
            if kind is float
            else f"{docs.get(name, name)} (default {default})",
        )
    g.add_argument(
        "--no-step-batching",
        dest="step_batching",
        action="store_false",
        help="serve image requests in whole batches (a request arriving mid-batch waits for it to end) "
        "instead of letting them join the running batch between denoising steps",
    )
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace) -> ServerSettings:
    return ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or os.environ.get(KEY_ENV) or None,
        max_batch=args.max_batch,
        batch_window_ms=args.batch_window_ms,
        queue_size=args.queue_size,
        max_body_mb=args.max_body_mb,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_tokens=args.max_tokens,
        max_timesteps=args.max_timesteps,
        step_batching=args.step_batching,
    )


def run(args: argparse.Namespace) -> int:
    import logging

    from unimedvl.commands.preflight import check_port, require_extra

    settings = settings_from_args(args)  # flag mistakes show before the model loads
    require_extra("api", "unimedvl api")
    check_port(settings.host, settings.port)
    import uvicorn

    from unimedvl.api.server import checkpoint_identity, create_app
    from unimedvl.commands.inference import load_model

    log = logging.getLogger("unimedvl.api")
    if not settings.local_only and settings.api_key is None:
        log.warning("serving on %s without --api-key: anyone who can reach this port can use the model", settings.host)
    model = load_model(args)
    model_id, created = checkpoint_identity(args.model)
    model_id = args.served_model_name or model_id
    app = create_app(model.inferencer, settings, model_id=model_id, created=created)
    from unimedvl.api.idle_timeout import server_options

    uvicorn.run(
        app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10, **server_options()
    )  # idle sockets are closed (idle_timeout.py)
    return 0
