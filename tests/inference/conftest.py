"""Fixtures of the inference tests: one perturbed debug checkpoint per module, the API on it, one thread."""

import pytest
from inference_support import SMALL, make_checkpoint

from unimedvl.inference.api import UniMedVL


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """Every inference test module runs with one torch thread (tests/conftest.py: one_thread)."""
    yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


@pytest.fixture(scope="module")
def api(checkpoint):
    return UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", **SMALL)
