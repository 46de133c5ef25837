"""Networks saved before ``network/description.py`` was split (their pickles name every class
``cil_core.network.description.<name>``) still load, and give the same output."""

import io
import pickle

import torch

from cil_core.network import description
from cil_core.network.reference import feedforward


def _as_saved_before_the_split(blob: bytes) -> bytes:
    # protocols <= 3 name classes by GLOBAL opcode, module and name as text lines (no length prefix to fix up)
    for mod in (b"cil_core.network.layers", b"cil_core.network.neuron", b"cil_core.network.spec"):
        blob = blob.replace(mod, b"cil_core.network.description")
    return blob


def test_a_network_pickled_under_the_old_module_path_loads_and_runs_the_same():
    net = feedforward([6, 5, 3], beta=0.8, seed=2, weight_gain=3.0)
    x = (torch.rand(12, 4, 6, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    buf = io.BytesIO()
    torch.save(net, buf, _use_new_zipfile_serialization=False)
    old = _as_saved_before_the_split(buf.getvalue())
    assert b"cil_core.network.description" in old and b"cil_core.network.neuron" not in old
    back = torch.load(io.BytesIO(old), weights_only=False)
    assert back.spec == net.spec
    assert torch.equal(back(x), net(x))


def test_the_old_module_path_names_every_vocabulary_class():
    spec = feedforward([4, 3]).spec
    back = pickle.loads(_as_saved_before_the_split(pickle.dumps(spec, protocol=2)))
    assert back == spec and type(back) is description.NetworkSpec
    for name in description.__all__:
        assert hasattr(description, name)
