"""Validation at the door: data, run lengths and checkpoints get a clear cil error — never a
hang, a raw traceback, a silent wrong answer or lost work."""

import os
import pickle
import signal

import pytest
import torch

import cil_core as cil
from cil_core.errors import CheckpointError, DataError
from cil_core.network.reference import feedforward


@pytest.fixture
def small(breast_cancer):
    x, y = breast_cancer.train.x[:, :40], breast_cancer.train.y[:40]
    return x, y


def _trainer(breast_cancer, algorithm="cil-spl", backend="ideal", **opts):
    net = feedforward([breast_cancer.n_inputs, 6, 2], seed=0, weight_gain=2.0)
    opts.setdefault("seed", 0)
    return cil.Trainer(net, backend, algorithm, **opts)


@pytest.fixture
def no_hang():
    """Fail (instead of hanging CI) if the test runs longer than 60 s."""
    def alarm(*_):
        raise TimeoutError("the call hung")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


# ------------------------------------------------------------------ data
def test_empty_training_data_is_refused_instead_of_looping_forever(breast_cancer, no_hang):
    tr = _trainer(breast_cancer)
    empty = (breast_cancer.train.x[:, :0], breast_cancer.train.y[:0])
    with pytest.raises(DataError, match="training data is empty"):
        tr.fit(empty, steps=5)
    with pytest.raises(DataError, match="evaluation data is empty"):
        tr.evaluate(empty)


@pytest.mark.parametrize("kw, msg", [
    (dict(batch_size=-5, steps=2), "batch_size must be a positive whole number, got -5"),
    (dict(batch_size=0, steps=2), "batch_size must be a positive whole number, got 0"),
    (dict(epochs=-1), "epochs must be a positive whole number, got -1"),
    (dict(steps=-3), "steps must be a positive whole number, got -3"),
    (dict(steps=2.5), "steps must be a positive whole number, got 2.5"),
    (dict(epochs=1, steps=2), "give epochs or steps, not both"),
])
def test_run_lengths_are_checked(breast_cancer, small, kw, msg, no_hang):
    with pytest.raises(cil.CilError, match=msg):
        _trainer(breast_cancer).fit(small, **kw)


def test_labels_out_of_range_name_the_range_and_hint_at_one_based_labels(breast_cancer, small):
    x, y = small
    with pytest.raises(DataError, match=r"labels lie in 1..2, the network has 2 outputs.*1-based labels"):
        _trainer(breast_cancer).fit((x, y + 1), epochs=1)
    with pytest.raises(DataError, match=r"labels lie in -1..0, the network has 2 outputs"):
        _trainer(breast_cancer).evaluate((x, y - 1))


def test_fractional_float_labels_are_refused_whole_ones_accepted(breast_cancer, small):
    x, y = small
    with pytest.raises(DataError, match="whole numbers"):
        _trainer(breast_cancer).fit((x, y.float() + 0.5), epochs=1)
    a = _trainer(breast_cancer).evaluate((x, y.float()))
    b = _trainer(breast_cancer).evaluate((x, y))
    assert a == b


def test_integer_and_float64_inputs_are_cast_and_give_the_same_result(breast_cancer, small):
    x, y = small
    ref = _trainer(breast_cancer).evaluate((x, y))
    assert _trainer(breast_cancer).evaluate((x.to(torch.int64), y)) == ref
    assert _trainer(breast_cancer).evaluate((x.double(), y)) == ref
    assert _trainer(breast_cancer).evaluate((x.bool(), y)) == ref


def test_nan_inputs_and_wrong_shapes_are_named(breast_cancer, small):
    x, y = small
    bad = x.clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(cil.NonFiniteError, match="training data: inputs hold 1 NaN"):
        _trainer(breast_cancer).fit((bad, y), epochs=1)
    with pytest.raises(cil.ShapeError, match=r"expects time-major \[T, N, 62\]"):
        _trainer(breast_cancer).fit((x[..., :10], y), epochs=1)
    with pytest.raises(cil.ShapeError, match="labels have shape"):
        _trainer(breast_cancer).fit((x, y[:3]), epochs=1)


# ------------------------------------------------------------------ checkpoints
def test_an_existing_checkpoint_is_not_overwritten_without_resume_or_force(breast_cancer, small, tmp_path):
    ck = tmp_path / "run.pt"
    _trainer(breast_cancer).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    before = ck.read_bytes()
    with pytest.raises(CheckpointError, match="already exists; resume it .* or overwrite it"):
        _trainer(breast_cancer).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    assert ck.read_bytes() == before
    _trainer(breast_cancer).fit(small, epochs=2, batch_size=20, checkpoint=ck, force=True)
    assert ck.read_bytes() != before


def test_checkpoint_folders_are_created_before_training(breast_cancer, small, tmp_path):
    ck = tmp_path / "new" / "deeper" / "run.pt"
    _trainer(breast_cancer).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    assert ck.is_file()
    with pytest.raises(CheckpointError, match="is a folder"):
        _trainer(breast_cancer).fit(small, epochs=1, checkpoint=tmp_path)


def test_resume_applies_a_new_learning_rate(breast_cancer, small, tmp_path):
    ck = tmp_path / "run.pt"
    _trainer(breast_cancer, lr=1e-2).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    tr = _trainer(breast_cancer, lr=1e-3)
    tr.fit(small, epochs=2, batch_size=20, checkpoint=ck, resume=ck)
    assert all(g["lr"] == 1e-3 for g in tr.algorithm.optimizer.param_groups)
    assert any("lr: 0.01 in the checkpoint, 0.001 now" in d for d in tr.resumed_changes)


@pytest.mark.parametrize("change, msg", [
    (dict(optimizer="sgd"), "algorithm_options.optimizer: 'adam' in the checkpoint, 'sgd' now"),
    (dict(observe="layers"), "algorithm_options.observe"),
])
def test_resume_refuses_unsafe_option_changes(breast_cancer, small, tmp_path, change, msg):
    ck = tmp_path / "run.pt"
    _trainer(breast_cancer).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    with pytest.raises(CheckpointError, match=msg):
        _trainer(breast_cancer, **change).fit(small, epochs=2, resume=ck)


def test_resume_refuses_other_chains_another_model_or_another_backend(breast_cancer, small, tmp_path):
    ck = tmp_path / "mh.pt"
    _trainer(breast_cancer, "mh", chains=2, burn_in=1).fit(small, steps=2, checkpoint=ck)
    with pytest.raises(CheckpointError, match="algorithm_options.chains: 2 in the checkpoint, 3 now"):
        _trainer(breast_cancer, "mh", chains=3, burn_in=1).fit(small, steps=3, resume=ck)
    other = cil.Trainer(feedforward([breast_cancer.n_inputs, 7, 2], seed=0), "ideal", "mh", chains=2, burn_in=1)
    with pytest.raises(CheckpointError, match=r"parameters.0.weight: \[6, 62\] in the checkpoint, \[7, 62\] now"):
        other.fit(small, steps=3, resume=ck)
    from cil_core.hardware.ideal import IdealBackend

    class OtherChip(IdealBackend):
        name = "other-chip"

    with pytest.raises(CheckpointError, match="backend: 'ideal' in the checkpoint, 'other-chip' now"):
        _trainer(breast_cancer, "mh", backend=OtherChip(), chains=2, burn_in=1).fit(small, steps=3, resume=ck)


def test_unreadable_checkpoints_get_a_cil_error(breast_cancer, small, tmp_path):
    ck = tmp_path / "run.pt"
    _trainer(breast_cancer).fit(small, epochs=1, batch_size=20, checkpoint=ck)
    data = ck.read_bytes()
    cases = {
        "missing.pt": None,
        "truncated.pt": data[: len(data) // 2],
        "garbage.pt": b"not a checkpoint at all",
    }
    for name, content in cases.items():
        path = tmp_path / name
        if content is not None:
            path.write_bytes(content)
        with pytest.raises(CheckpointError, match="does not exist|cannot be read as a cil checkpoint"):
            _trainer(breast_cancer).fit(small, epochs=2, resume=path)
    plain = tmp_path / "plain.pt"
    torch.save(feedforward([breast_cancer.n_inputs, 6, 2], seed=0).state_dict(), plain)
    with pytest.raises(CheckpointError, match="plain state_dict, not a cil checkpoint"):
        _trainer(breast_cancer).fit(small, epochs=2, resume=plain)


class _Boom:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_checkpoints_load_without_executing_code(breast_cancer, small, tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"format": "cil-checkpoint/1", "payload": _Boom()}, evil, pickle_protocol=pickle.DEFAULT_PROTOCOL)
    with pytest.raises(CheckpointError, match="cannot be read as a cil checkpoint"):
        _trainer(breast_cancer).fit(small, epochs=1, resume=evil)


# ------------------------------------------------------------------ options
@pytest.mark.parametrize("build, msg", [
    (lambda: cil.make_algorithm("mh", chain=8), "unknown option 'chain' for algorithm 'mh'.*did you mean 'chains'"),
    (lambda: cil.make_algorithm("mh", chains=2.5), "option 'chains' of algorithm 'mh' must be int, got 2.5"),
    (lambda: cil.make_algorithm("mh", chains=0), "chains, thin, adapt_every must be >= 1"),
    (lambda: cil.make_algorithm("cil-spl", lr="abc"), "option 'lr' of algorithm 'cil-spl' must be float, got 'abc'"),
    (lambda: cil.make_algorithm("cil-spl", observe="all"), "unknown observe='all'"),
    (lambda: cil.make_backend("ideal", seed=3), r"unknown option 'seed' for backend 'ideal' \(valid options: none\)"),
])
def test_algorithm_and_backend_options_are_checked_at_the_door(build, msg):
    with pytest.raises(cil.OptionError, match=msg):
        build()


@pytest.mark.parametrize("kw, msg", [
    (dict(seed="x"), "seed must be a whole number, got 'x'"),
    (dict(retries=-1), "retries must be a whole number >= 0, got -1"),
    (dict(timeout=0), "timeout must be a positive number"),
    (dict(readout="spikes"), "unknown readout 'spikes'"),
    (dict(device="tpu9"), "device 'tpu9' is not a torch device"),
])
def test_trainer_options_are_checked(breast_cancer, kw, msg):
    with pytest.raises(cil.OptionError, match=msg):
        _trainer(breast_cancer, **kw)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_without_cuda_is_named(breast_cancer):
    with pytest.raises(cil.OptionError, match="CUDA is not available on this machine"):
        _trainer(breast_cancer, device="cuda")


def test_cil_describe_lists_options_with_types_and_defaults(capsys):
    from cil_core.app.cli import main

    assert main(["describe", "mh"]) == 0
    out = capsys.readouterr().out
    assert "algorithm 'mh' (plugin cil_core)" in out
    assert "chains" in out and "int" in out and "default 4" in out and "parallel chains" in out
    assert main(["describe", "mhh"]) == 1
    assert "did you mean 'mh'" in capsys.readouterr().err
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("cil 0.")


def test_mh_that_keeps_no_sample_says_it_deploys_the_best_one(breast_cancer, small):
    with pytest.warns(RuntimeWarning, match="kept no sample .* burn_in=10"):
        _trainer(breast_cancer, "mh", chains=2, burn_in=10).fit(small, steps=3)


def test_unknown_surrogates_and_nan_inputs_get_their_own_errors(breast_cancer):
    from cil_core.network.description import Surrogate

    with pytest.raises(cil.SpecError, match="unknown surrogate 'triangle'"):
        Surrogate("triangle")
    net = feedforward([3, 2], seed=0)
    x = torch.full((2, 1, 3), float("nan"))
    with pytest.raises(cil.NonFiniteError):
        net(x)


def test_demo_on_a_backend_without_strength_names_what_does_not_fit(capsys):

    pytest.importorskip("cil_speck")
    from cil_core.app.cli import main as cli

    assert cli(["demo", "--quick", "--no-progress", "--backend", "speck"]) == 1
    assert "does not support 'bias'; the simulated chip has no bias inputs: build the layers with bias=False" \
        in capsys.readouterr().err


@pytest.mark.parametrize("name, value, hint", [("batched", "False", "for False write false"),
                                               ("max_samples", "None", "for None write null"),
                                               ("batched", "TRUE", "for True write true")])
def test_an_option_typed_in_pythons_spelling_is_refused_with_the_json_spelling(name, value, hint):
    """``--algo-opt batched=False`` reaches the door as the text 'False' (values are read as JSON):
    the refusal names the option, the type and the spelling that works."""
    with pytest.raises(cil.OptionError, match=rf"option '{name}' of algorithm 'mh' must be .*got '{value}' \(str\); "
                                              rf"{hint} \(values are read as JSON\)"):
        cil.make_algorithm("mh", **{name: value})
    with pytest.raises(cil.OptionError, match=r"must be int, got 'None' \(str\)$"):  # no hint where None is no option
        cil.make_algorithm("mh", chains="None")
