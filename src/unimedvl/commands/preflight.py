"""Checks a server command makes before it loads a model (which takes minutes for the release).

:func:`require_extra` turns a missing optional dependency into the pip command that installs it,
and :func:`check_port` a port another program holds into one line naming ``--port``; both raise
:class:`~unimedvl.errors.UserError`, so the CLI prints one line instead of a traceback after the load.
"""

from __future__ import annotations

import errno
import importlib.util
import socket

from unimedvl.errors import UserError

# extra of pyproject.toml -> the modules it provides (what `pip install -e .[extra]` brings)
EXTRAS = {
    "app": ("gradio",),
    "api": ("fastapi", "uvicorn"),
    "eval": ("sacrebleu", "rouge_score", "nltk", "matplotlib"),
}


def missing_modules(extra: str) -> list[str]:
    """The modules of ``extra`` that cannot be imported here."""
    return [name for name in EXTRAS[extra] if importlib.util.find_spec(name) is None]


def require_extra(extra: str, command: str) -> None:
    """Raise a one-line UserError with the pip command when the modules of ``extra`` are missing."""
    missing = missing_modules(extra)
    if missing:
        raise UserError(
            f"{command} needs {', '.join(missing)}, not installed; install it with "
            f"pip install -e '.[{extra}]' (from the clone) or pip install 'unimedvl[{extra}]'"
        )


def check_port(host: str, port: int, flag: str = "--port") -> None:
    """Raise a one-line UserError when ``host:port`` cannot be bound (in use, or not an address here)."""
    if not 0 <= port <= 65535:
        raise UserError(f"{flag} {port}: a port is a number from 1 to 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        raise UserError(f"--host {host}: not an address of this machine ({err.strerror})") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is no conflict
        try:
            sock.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise UserError(
                    f"{flag} {port}: port {port} on {host} is in use (another server?); stop it or "
                    f"choose another port with {flag} N"
                ) from None
            if err.errno == errno.EACCES:
                raise UserError(
                    f"{flag} {port}: not allowed to bind port {port} (ports below 1024 need root); "
                    f"choose one above 1024 with {flag} N"
                ) from None
            raise UserError(f"--host {host} {flag} {port}: cannot bind ({err.strerror})") from None
