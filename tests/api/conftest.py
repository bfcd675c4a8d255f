"""Fixtures of the API tests: the perturbed debug checkpoint of the inference tests, one torch thread."""

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

sys.path.insert(0, str(Path(__file__).parents[1] / "inference"))  # inference_support: the shared checkpoint

from inference_support import SMALL, make_checkpoint  # noqa: E402

from unimedvl.inference.api import UniMedVL  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    yield


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


@pytest.fixture(scope="module")
def model(checkpoint):
    """The debug model with the inference tests' tiny image sizes."""
    return UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", **SMALL)
