"""UniMedVL: a unified medical vision-language model (understand and generate medical images)."""

__version__ = "0.1.0"
