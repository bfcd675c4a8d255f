"""Fixtures of the inference tests: one perturbed debug checkpoint per module, the API on it, one thread."""

import pytest
import torch
from inference_support import SMALL, make_checkpoint

from unimedvl.inference.api import UniMedVL


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    # Debug-size ops are too small to gain from intra-op threads, and on a shared machine the
    # threads' barriers wait for descheduled peers: one thread is several times faster here.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "debug")


@pytest.fixture(scope="module")
def api(checkpoint):
    return UniMedVL.from_pretrained(checkpoint, device="cpu", dtype="fp32", **SMALL)
