"""Modules moved by the layout of issue 27 still import under their old names (``unimedvl._moved``)."""

import importlib

import pytest

from unimedvl._moved import MOVED


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_name_is_the_module_it_moved_to(old):
    assert importlib.import_module(old) is importlib.import_module(MOVED[old])


def test_the_public_names_of_moved_modules_keep_working():
    from unimedvl.checkpoint import load_model
    from unimedvl.checkpoint.memory_plan import LoadPlan as moved_load_plan
    from unimedvl.checkpoint.release import load_model as release_load_model
    from unimedvl.eval import metrics
    from unimedvl.memory_plan import LoadPlan

    assert load_model is release_load_model and LoadPlan is moved_load_plan
    assert metrics.psnr is importlib.import_module("unimedvl.metrics.image").psnr


def test_an_unknown_module_is_still_an_import_error():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("unimedvl.no_such_module")
