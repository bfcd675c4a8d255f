"""UniMedVL: a unified medical vision-language model (understand and generate medical images)."""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so `import unimedvl` stays light (no torch) until the API is used.
    if name == "UniMedVL":
        from unimedvl.inference.api import UniMedVL

        return UniMedVL
    raise AttributeError(f"module 'unimedvl' has no attribute {name!r}")
