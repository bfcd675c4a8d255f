"""The OpenAI-compatible HTTP API (``unimedvl api``): chat and image routes on one loaded model.

Modules: ``settings`` (flags and limits), ``batcher`` (the queue and the worker that batches
concurrent requests into ``Inferencer.run`` calls), ``uploads`` (data URLs and multipart files to
images), ``answers`` (decoded text to message fields, streamed or whole), ``chat`` and ``images``
(the routes), ``middleware`` (API key, body limit, timing), ``metrics`` (Prometheus text),
``errors`` (OpenAI's error shape), ``service`` (what the routes share), ``server`` (the app,
:func:`~unimedvl.api.server.create_app`, and a uvicorn thread), ``cli`` (the command). This file
imports nothing, so that ``unimedvl api --help`` imports neither torch nor fastapi.
"""
