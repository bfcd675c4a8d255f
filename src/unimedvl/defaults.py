"""Defaults several front ends share, written down once: text decoding and the servers' limits.

Text decoding (``ask``, ``chat``, the Python API, the app, the HTTP API, the memory estimate): an
answer (or the reasoning of thinking mode) is cut at :data:`MAX_NEW_TOKENS` tokens and decoded
greedily (:data:`TEMPERATURE` 0; :data:`TOP_P` applies once a temperature is given). Evaluation
keeps its own, longer limit (800: the reports' answers).

Serving (``unimedvl serve``, the web app, and ``unimedvl api``, the HTTP API): both bind to this
machine unless told otherwise and refuse the same oversized inputs, lower than the library's
16384 x 16384 pixel limit because a server reads images from anyone who can reach it.

Torch-free: ``unimedvl COMMAND --help`` shows these values without importing torch.
"""

from __future__ import annotations

# -- text decoding ------------------------------------------------------------------------------
MAX_NEW_TOKENS = 512  # answer (or reasoning) length limit when none is given
TEMPERATURE = 0.0  # 0: greedy decoding
TOP_P = 1.0  # nucleus sampling mass (used with a temperature above 0)

# -- the servers (app and HTTP API) --------------------------------------------------------------
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")  # interfaces that only this machine reaches
SERVER_HOST = "127.0.0.1"  # bound by default: this machine only
SERVER_MAX_IMAGE_PIXELS = 40_000_000  # largest decoded input image (width x height), read from its header
SERVER_MAX_UPLOAD_MB = 20.0  # largest upload (the app) or request body (the HTTP API)
SERVER_QUEUE_SIZE = 64  # requests that may wait for the model; more are refused with a message
