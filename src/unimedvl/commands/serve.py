"""``unimedvl serve``: the web app on a checkpoint.

::

    unimedvl serve --model DIR                          # http://127.0.0.1:7860, this machine only
    unimedvl serve --model DIR --host 0.0.0.0 --auth alice:secret --port 8080
    UNIMEDVL_APP_NUM_TIMESTEPS=20 unimedvl serve --model DIR --vae-min-size 256   # faster on a CPU

Binds to 127.0.0.1 unless ``--host`` is given. Uploads are limited to ``--max-upload-mb`` and to
image types; ``--concurrency`` model calls run at once, the rest wait in the queue.
"""

from __future__ import annotations

import argparse

from unimedvl.app.presets import AppSettings
from unimedvl.commands.inference import model_options


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve",
        help="start the web app (ask, edit, generate) on a checkpoint",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    model_options(p, AppSettings.max_image_pixels, " for a server; the library's is 16384 x 16384")
    defaults = AppSettings  # the field defaults (an instance would read $UNIMEDVL_APP_NUM_TIMESTEPS)
    p.add_argument(
        "--host", default=defaults.host, help=f"interface to bind (default {defaults.host}: this machine only)"
    )
    p.add_argument("--port", type=int, default=defaults.port, help=f"port (default {defaults.port})")
    p.add_argument(
        "--auth",
        metavar="USER:PASS",
        help="require this user name and password to open the page (default: no password, localhost only)",
    )
    p.add_argument(
        "--max-upload-mb",
        type=float,
        default=defaults.max_upload_mb,
        help=f"largest accepted upload (default {defaults.max_upload_mb:g} MB)",
    )
    p.add_argument(
        "--concurrency",
        type=int,
        default=defaults.concurrency,
        help=f"model calls at once (default {defaults.concurrency}; others queue)",
    )
    p.add_argument(
        "--queue-size",
        type=int,
        default=defaults.queue_size,
        help=f"requests that may wait in the queue (default {defaults.queue_size})",
    )
    p.add_argument(
        "--num-timesteps",
        type=int,
        default=None,
        help="default timesteps in the Advanced panels "
        "(default: $UNIMEDVL_APP_NUM_TIMESTEPS, else the checkpoint's presets: 50 for the "
        "release)",
    )
    p.add_argument("--no-examples", action="store_true", help="do not build the example images at startup")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a medical-data server
    from unimedvl.commands.preflight import check_port, require_extra

    require_extra("app", "unimedvl serve")  # before the model loads: one line, not a traceback minutes later
    check_port(args.host, args.port)
    from unimedvl.app.presets import parse_auth
    from unimedvl.app.ui import build_app, launch
    from unimedvl.commands.inference import load_model

    settings = AppSettings(
        host=args.host,
        port=args.port,
        auth=parse_auth(args.auth) if args.auth else None,
        max_upload_mb=args.max_upload_mb,
        concurrency=args.concurrency,
        queue_size=args.queue_size,
        num_timesteps=args.num_timesteps,
        examples=not args.no_examples,
        max_image_pixels=args.max_image_pixels,
    )
    model = load_model(args)
    launch(build_app(model, settings), settings)
    return 0
