"""The ToyChip's own test (``pytest`` in this folder): the contract every cil backend must meet."""

from cil_core.network.reference import feedforward
from cil_core.testing import check_backend
from cil_toychip import ToyChip


def test_toychip_meets_the_backend_contract():
    check_backend(ToyChip(seed=1))  # transfer, shapes, no state leaking between calls or samples, sets
    check_backend(ToyChip(), too_big=feedforward([4, 300, 2]).spec, limit="neurons per layer")
    check_backend(ToyChip(), too_big=feedforward([4, 8, 2], bias=True).spec, limit="biases")
