"""UniMedVL: a unified medical vision-language model (understand and generate medical images).

``from unimedvl import UniMedVL, Request`` (also ``Answer``, ``ImageAnswer``, ``Result``): the
Python API of :mod:`unimedvl.inference.api`.
"""

__version__ = "0.1.0"

from unimedvl import _moved

_moved.install()  # modules that moved keep their old import names (see _moved.MOVED)

# Lazy, so `import unimedvl` stays light (no torch) until the API is used.
_API = ("UniMedVL", "Request", "Result", "Answer", "ImageAnswer", "ChatSession")


def __getattr__(name: str):
    if name in _API:
        import unimedvl.inference.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'unimedvl' has no attribute {name!r}")
