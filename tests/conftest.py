import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))  # tests/chips.py and other test helpers

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def breast_cancer():
    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    return load_breast_cancer_spikes(num_steps=16, seed=0)


@pytest.fixture
def registry_guard():
    """Unregister whatever a test registers at run time."""
    import cil_core

    reg = cil_core.get_manager()
    before = {name for name, _ in reg.pm.list_name_plugin()}
    yield reg
    for name, _ in list(reg.pm.list_name_plugin()):
        if name not in before:
            reg.unregister(name)
