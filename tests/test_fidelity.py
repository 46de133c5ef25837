"""cil_core.fidelity: the same weights in software and on a chip, compared layer by layer."""

from __future__ import annotations

import json

import pytest
import torch

import cil_core as cil
from cil_core.network.reference import feedforward

from chips import FixedMismatchChip


@pytest.fixture(scope="module")
def data():
    from cil_core.data.breast_cancer import load_breast_cancer_spikes

    d = load_breast_cancer_spikes(num_steps=16, seed=0).test
    return d.x[:, :96], d.y[:96]


def _net(readout: str = "spikes"):
    return feedforward([62, 24, 12, 2], seed=0, weight_gain=3.0, readout=readout)


@pytest.mark.parametrize("readout", ["spikes", "membrane"])
def test_ideal_backend_is_faithful(data, readout):
    rep = cil.fidelity(_net(readout), "ideal", data, batch_size=40,
                       readout="rate" if readout == "spikes" else "max-membrane")
    assert [lf.name for lf in rep.layers] == ["lif0", "lif1", "lif2"]
    assert [lf.hidden for lf in rep.layers] == [True, True, False]
    assert rep.layers[-1].kind == ("spikes" if readout == "spikes" else "membrane")
    for lf in rep.layers:
        assert lf.observed
        assert lf.correlation == pytest.approx(1.0)
        assert lf.rate_error == 0.0 and lf.chip_rate == lf.sw_rate
        assert lf.distortion == 0.0 and lf.local_distortion == 0.0
        assert lf.first_divergence is None and lf.diverged_fraction == 0.0
        assert lf.membrane_rmse == 0.0  # the ideal chip reports membranes
    assert rep.layers[0].sw_rate > 0  # the comparison is not trivially between silent layers
    assert rep.agreement == 1.0 and rep.software_accuracy == rep.chip_accuracy
    assert rep.n_samples == 96 and rep.time_steps == 16
    assert rep.observe_layers_worth_it is False and "not worth it" in rep.summary
    d = json.loads(rep.to_json())
    assert d["agreement"] == 1.0 and len(d["layers"]) == 3 and "rasters" not in d


def _analog(strength: float):
    return cil.make_backend("analog-mismatch", strength=strength, seed=3)


def test_analog_mismatch_diverges_more_with_more_strength(data):
    net = _net()
    zero = cil.fidelity(net, _analog(0.0), data)
    assert all(lf.distortion == 0.0 and lf.first_divergence is None for lf in zero.layers)
    weak, strong = cil.fidelity(net, _analog(0.25), data), cil.fidelity(net, _analog(1.0), data)
    for rep in (weak, strong):
        hidden = rep.layers[0]
        assert hidden.first_divergence is not None and hidden.distortion > 0 and hidden.membrane_rmse is None
        assert rep.most_distorted in {"lif0", "lif1", "lif2"} and rep.ranking[0] == rep.most_distorted
        assert rep.stochastic
    for w, s in zip(weak.layers, strong.layers):
        assert s.distortion > w.distortion, (w, s)
        assert s.diverged_fraction >= w.diverged_fraction
    assert strong.layers[0].correlation < weak.layers[0].correlation
    assert strong.layers[0].rate_error > weak.layers[0].rate_error
    assert strong.layers[0].first_divergence <= weak.layers[0].first_divergence
    assert strong.agreement <= weak.agreement < 1.0
    assert strong.observe_layers_worth_it and "likely worth it" in strong.summary


def test_speck_runs(data):
    pytest.importorskip("numba")
    pytest.importorskip("cil_speck")
    net = feedforward([62, 16, 2], seed=0, beta=1.0, weight_gain=3.0)
    rep = cil.fidelity(net, "speck", data, batch_size=48)
    assert rep.backend == "speck" and all(lf.observed for lf in rep.layers)
    assert all(lf.membrane_rmse is None for lf in rep.layers)  # the chip does not report membranes
    assert all(lf.correlation is None or -1 <= lf.correlation <= 1 for lf in rep.layers)
    assert 0 <= rep.agreement <= 1


def test_backend_without_layer_observations_reports_hidden_layers_as_unobserved(data, tmp_path):
    chip = FixedMismatchChip(sigma=0.5, bits=4, seed=1)
    assert not chip.observes_layers
    rep = cil.fidelity(_net(), chip, data, sample=5)
    for lf in rep.layers[:-1]:
        assert not lf.observed and lf.sw_rate > 0
        assert (lf.chip_rate, lf.rate_error, lf.correlation, lf.distortion, lf.local_distortion, lf.first_divergence,
                lf.diverged_fraction, lf.membrane_rmse) == (None,) * 8
    out = rep.layers[-1]
    assert out.observed and out.chip_rate is not None and out.distortion is not None
    assert out.local_distortion is None  # needs the chip's input to the layer
    assert rep.ranking == ["lif2"] and rep.observe_layers_worth_it is None and "does not observe" in rep.summary
    assert rep.rasters[0]["chip"] is None and rep.rasters[-1]["chip"] is not None
    assert "no" in rep.table().splitlines()[2]
    png = rep.plot(tmp_path / "f.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_raise_cil_errors(data):
    x, y = data
    net = _net()
    with pytest.raises(cil.ShapeError, match="fidelity data"):
        cil.fidelity(net, "ideal", (x[..., :10], y))
    with pytest.raises(cil.DataError, match="labels lie in"):
        cil.fidelity(net, "ideal", (x, y + 5))
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(cil.NonFiniteError):
        cil.fidelity(net, "ideal", (bad, y))
    with pytest.raises(cil.DataError, match="empty"):
        cil.fidelity(net, "ideal", (x[:, :0], y[:0]))
    with pytest.raises(cil.OptionError, match="sample"):
        cil.fidelity(net, "ideal", data, sample=96)
    with pytest.raises(cil.OptionError, match="batch_size"):
        cil.fidelity(net, "ideal", data, batch_size=0)
    with pytest.raises(cil.OptionError, match="readout"):
        cil.fidelity(net, "ideal", data, readout="mean")


def test_cli_writes_json_and_png(data, tmp_path, capsys):
    from cil_core.app.cli import main

    x, y = data
    torch.save((x, y), tmp_path / "d.pt")
    torch.save(feedforward([62, 32, 2], seed=7, weight_gain=3.0).module.state_dict(), tmp_path / "w.pt")
    rc = main(["fidelity", "--data", str(tmp_path / "d.pt"), "--backend", "analog-mismatch", "--backend-opt",
               "strength=0.5", "seed=2", "--weights", str(tmp_path / "w.pt"), "--out", str(tmp_path / "r" / "f.json"),
               "--plot", str(tmp_path / "r" / "f.png"), "--sample", "3"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "lif0 (spikes)" in text and "output agreement" in text
    rep = json.loads((tmp_path / "r" / "f.json").read_text())
    assert rep["backend"] == "analog-mismatch" and rep["n_samples"] == 96 and rep["sample"] == 3
    assert [lf["name"] for lf in rep["layers"]] == ["lif0", "lif1"]
    assert (tmp_path / "r" / "f.png").read_bytes()[:4] == b"\x89PNG"
    # the weights were loaded: the report differs from the default-seed model's
    assert main(["fidelity", "--data", str(tmp_path / "d.pt"), "--out", str(tmp_path / "g.json")]) == 0
    assert json.loads((tmp_path / "g.json").read_text())["layers"][0]["sw_rate"] != rep["layers"][0]["sw_rate"]
    capsys.readouterr()
    assert main(["fidelity", "--data", str(tmp_path / "d.pt"), "--weights", str(tmp_path / "none.pt")]) == 1
    assert "does not exist" in capsys.readouterr().err
