"""How faithfully a chip runs a network: the same weights in software and on the chip, layer by layer.

    report = cil.fidelity(net, "analog-mismatch", test_data, readout="rate")
    print(report.table())
    report.to_json("fidelity.json"); report.plot("fidelity.png")

The software reference is :func:`~cil_core.network.executor.simulate` on the wrapped network's
description and weights, with the neuron parameters the chip realises where its deployment says
they differ (:func:`~cil_core.hardware.realised_neurons`: e.g. a decay rounded onto a bit-shift
grid; what the report measures is then the chip's own distortion, not a known rounding); the
chip runs the same weights through a :class:`~cil_core.hardware.HardwareSession` (``record=True``
when the backend observes its layers, otherwise the output only). Per neuron layer (``C`` = per-neuron spike counts over time,
one row per sample, ``sw`` = software, ``hw`` = chip):

* ``correlation``: Pearson correlation of ``C_hw`` and ``C_sw`` over all (sample, neuron) pairs
  (1.0 when both are the same constant, e.g. a silent layer on both sides; ``None`` when only
  one of them is constant);
* ``sw_rate`` / ``chip_rate``: mean spikes per neuron per time step; ``rate_error`` =
  ``|chip_rate - sw_rate| / sw_rate`` (0 when both are 0, ``None`` when only the software is silent);
* ``distortion``: the relative spike-count error ``||C_hw - C_sw||_F / ||C_sw||_F`` (0 = identical;
  1 = an error as large as the activity itself; capped at :data:`DISTORTION_CAP`). It counts
  rate offsets and misplaced spikes alike and is what layers are ranked by. It is
  **cumulative**: a layer on the chip is driven by the chip's own upstream activity;
* ``local_distortion``: the same, but against the software layer driven by the *chip's* spikes of
  the layer before (one extra software pass per layer, needs the chip's observation of that
  layer): what the chip adds in this layer alone;
* ``first_divergence``: the first time step at which any neuron's spikes differ, minimised over
  samples (``None`` if they never differ); ``diverged_fraction``: the fraction of samples with
  any difference;
* ``membrane_rmse``: root mean square of the membrane difference over time, neurons and samples,
  where the chip reports membranes (``backend.observes_membrane``), else ``None``.

A non-spiking readout layer (``output="membrane"``) is compared through its membrane, which the
chip always returns as the network output: ``C`` is then the readout's per-class score
(max over time for ``"max-membrane"``, sum over time for ``"rate"``), the rates are the mean
score, ``membrane_rmse`` is measured on the output, and a time step diverges where
``|v_hw - v_sw| > 1e-5 (1 + |v_sw|)``.

Layers the chip does not observe are reported with ``observed=False`` and ``None`` for every
chip figure; nothing is estimated for them. For the network: ``agreement`` (fraction of samples
whose predicted class is the same in software and on the chip, through the readout) and the
accuracy of each.

**Is observing every layer worth it?** ``cil-spl`` with ``observe="output"`` back-propagates
through the software model evaluated at *software* hidden states; ``observe="layers"``
substitutes the chip's hidden states (Cramer et al. 2020). That is likely worth a chip that
reports its layers when a hidden layer's distortion is at least :data:`WORTH_OBSERVING`
(10 % relative spike-count error): the hidden states the gradient is computed at are then
substantially wrong. Below that, output-only CIL-SPL sees nearly the chip's hidden states anyway.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .data import as_dense
from .data.stream import Door, as_batches
from .errors import CilError, OptionError
from .hardware.observation import LayerObservation
from .network.executor import simulate
from .network.wrapped import WrappedNetwork
from .plugin.factories import make_backend, wrap
from .plugin.session import HardwareSession
from .training.readout import Readout

#: a hidden layer at least this distorted (relative spike-count error) makes observe="layers" likely worth it
WORTH_OBSERVING = 0.10
#: distortion is capped here (a chip layer active where the software layer is silent)
DISTORTION_CAP = 10.0
#: membrane divergence tolerance: |v_hw - v_sw| > MEMBRANE_TOL * (1 + |v_sw|)
MEMBRANE_TOL = 1e-5


@dataclass
class LayerFidelity:
    """Software-vs-chip figures of one neuron layer (see the module docstring). Every chip figure
    is ``None`` when the chip does not observe the layer (``observed=False``)."""

    index: int
    name: str
    kind: str  # "spikes" or "membrane" (non-spiking readout)
    neurons: int
    hidden: bool
    observed: bool
    sw_rate: float
    chip_rate: float | None = None
    rate_error: float | None = None
    correlation: float | None = None
    distortion: float | None = None
    local_distortion: float | None = None
    first_divergence: int | None = None
    diverged_fraction: float | None = None
    membrane_rmse: float | None = None


@dataclass
class FidelityReport:
    """What :func:`fidelity` measured. ``layers`` in network order; ``ranking`` names the
    observed layers from the most to the least distorted; ``summary`` says it in words."""

    backend: str
    n_samples: int
    time_steps: int
    readout: str
    layers: list[LayerFidelity]
    agreement: float
    software_accuracy: float
    chip_accuracy: float
    ranking: list[str]
    most_distorted: str | None
    observe_layers_worth_it: bool | None
    summary: str
    stochastic: bool = False
    sample: int = 0
    rasters: list[dict[str, Any]] = field(default_factory=list, repr=False)
    #: the trained neuron parameters both sides ran (``NeuronParameter``: the value the layer uses,
    #: after the library's clamp): ``{"layer", "field", "name", "shape", "min", "mean", "max"}`` each
    neuron_parameters: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("rasters")
        d["rules"] = {"distortion": "||C_hw - C_sw||_F / ||C_sw||_F of per-neuron spike counts",
                      "worth_observing_threshold": WORTH_OBSERVING}
        return d

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON (without the raster data); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return text

    def table(self) -> str:
        """A plain-text table for the terminal, then the summary."""
        def f(v: Any, spec: str = ".3f") -> str:
            return "—" if v is None else format(v, spec) if isinstance(v, float) else str(v)

        head = ["layer", "neurons", "observed", "sw rate", "chip rate", "rate err", "corr", "distortion", "local",
                "1st div", "mem RMSE"]
        rows = [[f"{lf.name} ({lf.kind})", lf.neurons, "yes" if lf.observed else "no", f(lf.sw_rate), f(lf.chip_rate),
                 f(lf.rate_error), f(lf.correlation), f(lf.distortion), f(lf.local_distortion),
                 "never" if lf.observed and lf.first_divergence is None else f(lf.first_divergence),
                 f(lf.membrane_rmse, ".4g")] for lf in self.layers]
        cells = [head] + [[str(c) for c in r] for r in rows]
        w = [max(len(r[i]) for r in cells) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(r)) for r in cells]
        lines.insert(1, "  ".join("-" * x for x in w))
        lines.append("")
        lines.append(f"{self.n_samples} samples, T = {self.time_steps}, readout {self.readout!r} on {self.backend}"
                     + (" (stochastic chip: figures vary between calls)" if self.stochastic else ""))
        lines.append(f"output agreement {self.agreement:.3f}; accuracy software {self.software_accuracy:.3f}, "
                     f"chip {self.chip_accuracy:.3f}")
        for p in self.neuron_parameters:
            lines.append(f"trained {p['field']} '{p['name']}' (layer {p['layer']}, shape {tuple(p['shape'])}): "
                         f"min {p['min']:.4g}, mean {p['mean']:.4g}, max {p['max']:.4g}")
        lines.append(self.summary)
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """Per-layer distortion bars and, for sample ``sample``, the software vs chip spike raster
        of every layer (membrane traces for a readout layer); written as PNG (Agg backend)."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as exc:  # pragma: no cover - matplotlib is a dev dependency
            raise OptionError("FidelityReport.plot needs matplotlib: pip install matplotlib") from exc
        n = len(self.layers)
        fig = plt.figure(figsize=(3.6 * max(n, 2), 6.8))
        gs = fig.add_gridspec(2, max(n, 1), height_ratios=[1, 1.4], hspace=0.45, wspace=0.35)
        top = fig.add_subplot(gs[0, :])
        bottom = [fig.add_subplot(gs[1, j]) for j in range(n)]
        xs = list(range(n))
        names = [lf.name for lf in self.layers]
        cum = [lf.distortion if lf.distortion is not None else 0.0 for lf in self.layers]
        loc = [lf.local_distortion if lf.local_distortion is not None else 0.0 for lf in self.layers]
        top.bar([x - 0.2 for x in xs], cum, 0.4, label="distortion (vs software)")
        top.bar([x + 0.2 for x in xs], loc, 0.4, label="local (given the chip's input)")
        for x, lf in zip(xs, self.layers):
            if not lf.observed:
                top.text(x, 0.0, "not observed", ha="center", va="bottom", rotation=90, fontsize=8)
        top.axhline(WORTH_OBSERVING, color="grey", ls=":", lw=1, label=f"{WORTH_OBSERVING:g} (worth observing)")
        top.set_xticks(xs, names)
        top.set_ylabel("relative spike-count error")
        top.set_title(f"{self.backend}: agreement {self.agreement:.2f}, accuracy sw {self.software_accuracy:.2f} / "
                      f"chip {self.chip_accuracy:.2f}")
        top.legend(fontsize=8)
        for ax, lf, r in zip(bottom, self.layers, self.rasters):
            sw, hw = r["software"], r["chip"]
            if lf.kind == "membrane":
                for j in range(sw.shape[1]):
                    line, = ax.plot(sw[:, j], lw=1)
                    if hw is not None:
                        ax.plot(hw[:, j], lw=1, ls="--", color=line.get_color())
                ax.set_ylabel("membrane (solid sw, dashed chip)")
            else:
                t, i = torch.nonzero(sw > 0, as_tuple=True)
                ax.scatter(t, i, s=14, marker="|", color="C0", label="software")
                if hw is not None:
                    t, i = torch.nonzero(hw > 0, as_tuple=True)
                    ax.scatter(t, i, s=6, marker="o", facecolors="none", edgecolors="C3", label="chip")
                ax.set_ylabel("neuron")
                ax.legend(fontsize=7, loc="upper right")
            ax.set_xlabel("time step")
            ax.set_title(f"{lf.name}, sample {self.sample}" + ("" if lf.observed else " (chip: not observed)"),
                         fontsize=9)
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(p, dpi=100, bbox_inches="tight")
        plt.close(fig)
        return p


class _Acc:
    """Streaming sums for one layer: count moments and squared errors (float64)."""

    def __init__(self) -> None:
        self.n = 0
        self.sx = self.sy = self.sxx = self.syy = self.sxy = self.see = 0.0
        self.local_see = 0.0
        self.local_sxx = 0.0
        self.mem_se = 0.0
        self.mem_n = 0
        self.first: int | None = None
        self.diverged = 0
        self.sw_sum = 0.0
        self.hw_sum = 0.0
        self.elems = 0  # neuron-steps

    def add(self, c_sw: torch.Tensor, c_hw: torch.Tensor) -> None:
        x, y = c_sw.double().flatten(), c_hw.double().flatten()
        self.n += x.numel()
        self.sx += float(x.sum())
        self.sy += float(y.sum())
        self.sxx += float((x * x).sum())
        self.syy += float((y * y).sum())
        self.sxy += float((x * y).sum())
        self.see += float(((x - y) ** 2).sum())

    def correlation(self) -> float | None:
        n = self.n
        vx = self.sxx / n - (self.sx / n) ** 2
        vy = self.syy / n - (self.sy / n) ** 2
        tiny = 1e-12 * max(1.0, self.sxx / n, self.syy / n)
        if vx <= tiny and vy <= tiny:
            return 1.0 if self.see <= tiny * n else None
        if vx <= tiny or vy <= tiny:
            return None
        cov = self.sxy / n - (self.sx / n) * (self.sy / n)
        return max(-1.0, min(1.0, cov / math.sqrt(vx * vy)))


def _relative(see: float, sxx: float) -> float:
    if sxx <= 0:
        return 0.0 if see <= 0 else DISTORTION_CAP
    return min(DISTORTION_CAP, math.sqrt(see / sxx))


def _scores(trace: torch.Tensor, readout: Readout, kind: str) -> torch.Tensor:
    """Per-sample, per-neuron activity ``[B, N]`` of a layer trace ``[T, B, ...]``: spike counts,
    or for a non-spiking readout layer the readout's score (unscaled)."""
    if kind == "membrane":
        return readout.logits(trace.flatten(2)) / readout.scale
    return trace.flatten(2).sum(0)


def _first_divergence(diff: torch.Tensor) -> torch.Tensor:
    """``diff`` ``[T, B, ...]`` bool → per sample the first step with a difference (``T`` if none)."""
    T = diff.shape[0]
    any_t = diff.flatten(2).any(-1)  # [T, B]
    steps = torch.arange(T, device=diff.device).unsqueeze(1).expand_as(any_t)
    return torch.where(any_t, steps, torch.full_like(steps, T)).min(0).values


def fidelity(net: Any, backend: Any, data: Any, *, batch_size: int = 256, readout: Readout | str = "rate",
             sample: int = 0, retries: int = 0, timeout: float | None = None, time_first: bool | None = None,
             num_workers: int = 0) -> FidelityReport:
    """Run the same weights in software and on ``backend`` and compare them layer by layer.

    Args:
        net: a :class:`WrappedNetwork` (or any model :func:`cil_core.wrap` accepts).
        backend: a backend instance or a registered backend name.
        data: ``(x [T, N, ...], y [N])`` or :class:`~cil_core.SpikeData`, a torch ``Dataset``, a
            ``DataLoader`` or an iterable of ``(inputs, labels)`` batches (streamed: the figures are
            running sums, nothing is concatenated), each batch checked at the door
            (:mod:`cil_core.data.stream`).
        batch_size: samples per chip call (in-memory data and Datasets; a DataLoader keeps its own).
        readout: how outputs become classes (``"rate"``, ``"max-membrane"`` or a :class:`Readout`).
        sample: the sample (index into ``data``) whose spikes the raster of :meth:`FidelityReport.plot` shows.
        retries, timeout: as for :class:`~cil_core.hardware.HardwareSession`.
        time_first, num_workers: the layout of a loader's tensor batches (``None``: inferred where
            unambiguous) and the workers of the DataLoader built for a Dataset, as for
            :class:`~cil_core.Trainer`.

    Raises :class:`~cil_core.errors.DataError` / :class:`~cil_core.errors.ShapeError` for data
    the network cannot run and :class:`~cil_core.errors.OptionError` for bad options.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise OptionError(f"batch_size must be a whole number >= 1, got {batch_size!r}")
    if not isinstance(readout, (Readout, str)):
        raise OptionError(f"readout must be 'rate', 'max-membrane' or a Readout, got {readout!r}")
    ro = readout if isinstance(readout, Readout) else Readout(readout)
    wn: WrappedNetwork = net if isinstance(net, WrappedNetwork) else wrap(net)
    be = make_backend(backend) if isinstance(backend, str) else backend
    spec = wn.spec
    params = wn.detached_parameters()
    dtype = next(iter(params.values())).dtype
    n_classes = spec.output_shape[-1] if len(spec.output_shape) == 1 else None
    stream = as_batches(data, Door(spec, n_classes, dtype, wn.device, "fidelity data"), batch_size=batch_size,
                        time_first=time_first, num_workers=num_workers)
    known = stream.num_samples
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0 or (known is not None and sample >= known):
        bound = "N - 1" if known is None else known - 1
        raise OptionError(f"sample must be an index into the data (0 .. {bound}), got {sample!r}")
    wn.check_finite()
    session = HardwareSession(be, retries=retries, timeout=timeout)
    session.check(spec)
    observes = session.observes_layers
    observes_mem = session.observes_membrane

    neurons = spec.neuron_layers()
    L = len(neurons)
    shapes = spec.shapes()
    acc = [_Acc() for _ in range(L)]
    observed = [k == L - 1 or observes for k in range(L)]
    agree = sw_correct = hw_correct = 0
    T = 0  # the longest time axis seen (batches of a loader may differ)
    sample_steps = 0  # sum over samples of their batch's time steps
    rasters: list[dict[str, Any]] = []
    seen = 0
    with torch.no_grad():
        for xb, yb in stream:
            x = as_dense(xb)
            B = x.shape[1]
            Tb = int(x.shape[0])
            T = max(T, Tb)
            sample_steps += B * Tb
            obs = session.run(spec, params, xb, record=observes, purpose="fidelity")
            # the software side runs the neuron parameters the chip realised (software units)
            real = session.realised_neurons(spec)
            sw = simulate(spec, params, x, record=True, record_membrane=True, neurons=real)
            hw_layers: list[LayerObservation | None] = [None] * L
            if observes:
                if obs.layers is None or len(obs.layers) != L:
                    raise CilError(f"backend '{session.name}' says it observes layers but returned "
                                   f"{'none' if obs.layers is None else len(obs.layers)} for record=True")
                hw_layers = list(obs.layers)
            last = neurons[-1][1]
            if hw_layers[-1] is None:  # the output is always observed
                hw_layers[-1] = LayerObservation(obs.output, obs.output if last.output == "membrane" else None)
            # local: software layer k driven by the chip's layers < k
            local: list[torch.Tensor | None] = [None] * L
            for k in range(L):
                if k == 0:
                    local[0] = sw.layers[0].spikes
                elif hw_layers[k - 1] is not None and hw_layers[k] is not None:
                    inj = [LayerObservation(hw_layers[j].spikes, None) if j < k else None  # type: ignore[union-attr]
                           for j in range(L)]
                    local[k] = simulate(spec, params, x, record=True, observations=inj, neurons=real,
                                        validate=False).layers[k].spikes
            for k, (i, n) in enumerate(neurons):
                a = acc[k]
                kind = "membrane" if n.output == "membrane" else "spikes"
                s_sw = sw.layers[k].spikes
                c_sw = _scores(s_sw, ro, kind)
                a.sw_sum += float(c_sw.double().sum())  # the software side is known for every layer
                a.elems += c_sw.numel()
                hw = hw_layers[k]
                if hw is None:
                    continue
                s_hw = hw.spikes
                c_hw = _scores(s_hw, ro, kind)
                a.add(c_sw, c_hw)
                a.hw_sum += float(c_hw.double().sum())
                if local[k] is not None:
                    c_loc = _scores(local[k], ro, kind)  # type: ignore[arg-type]
                    a.local_see += float(((c_loc.double() - c_hw.double()) ** 2).sum())
                    a.local_sxx += float((c_loc.double() ** 2).sum())
                if n.output == "membrane":
                    diff = (s_hw - s_sw).abs() > MEMBRANE_TOL * (1 + s_sw.abs())
                else:
                    diff = s_hw != s_sw
                fd = _first_divergence(diff)
                a.diverged += int((fd < Tb).sum())
                m = int(fd.min())
                if m < Tb:
                    a.first = m if a.first is None else min(a.first, m)
                # a readout layer's output is its membrane; other layers' only where the chip reports them
                mem_hw = s_hw if n.output == "membrane" else hw.membrane if observes_mem else None
                if mem_hw is not None and sw.layers[k].membrane is not None:
                    a.mem_se += float(((mem_hw.double() - sw.layers[k].membrane.double()) ** 2).sum())
                    a.mem_n += mem_hw.numel()
            z_sw, z_hw = ro.logits(sw.output), ro.logits(obs.output)
            p_sw, p_hw = z_sw.argmax(-1), z_hw.argmax(-1)
            agree += int((p_sw == p_hw).sum())
            sw_correct += int((p_sw == yb).sum())
            hw_correct += int((p_hw == yb).sum())
            if seen <= sample < seen + B:
                j = sample - seen
                for k in range(L):
                    hw = hw_layers[k]
                    rasters.append({"software": sw.layers[k].spikes[:, j].flatten(1).cpu(),
                                    "chip": None if hw is None else hw.spikes[:, j].flatten(1).cpu()})
            seen += B

    N = seen
    if sample >= N:
        raise OptionError(f"sample must be an index into the data (0 .. {N - 1}), got {sample!r}")
    layers: list[LayerFidelity] = []
    for k, (i, n) in enumerate(neurons):
        a = acc[k]
        kind = "membrane" if n.output == "membrane" else "spikes"
        size = int(math.prod(shapes[i]))
        per = sample_steps / N if kind == "spikes" else 1  # spikes per neuron per step; readout: mean score
        sw_rate = a.sw_sum / (a.elems * per)  # known for every layer; the chip's only where observed
        lf = LayerFidelity(index=k, name=n.name or f"layer{k}", kind=kind, neurons=size, hidden=k < L - 1,
                           observed=observed[k], sw_rate=sw_rate)
        if observed[k]:
            hw_rate = a.hw_sum / (a.elems * per)
            lf.chip_rate = hw_rate
            lf.rate_error = (0.0 if hw_rate == sw_rate else None) if sw_rate == 0 else abs(hw_rate - sw_rate) / abs(sw_rate)
            lf.correlation = a.correlation()
            lf.distortion = _relative(a.see, a.sxx)
            if k == 0:
                lf.local_distortion = lf.distortion
            elif observed[k - 1]:
                lf.local_distortion = _relative(a.local_see, a.local_sxx)
            lf.first_divergence = a.first
            lf.diverged_fraction = a.diverged / N
            if a.mem_n:
                lf.membrane_rmse = math.sqrt(a.mem_se / a.mem_n)
        layers.append(lf)

    report = FidelityReport(
        backend=session.name, n_samples=N, time_steps=T, readout=ro.kind, layers=layers, agreement=agree / N,
        software_accuracy=sw_correct / N, chip_accuracy=hw_correct / N, ranking=[], most_distorted=None,
        observe_layers_worth_it=None, summary="", stochastic=session.stochastic, sample=sample, rasters=rasters,
        neuron_parameters=_neuron_parameter_values(spec, params))
    _judge(report, observes)
    return report


def _neuron_parameter_values(spec: Any, params: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The values of ``spec``'s trained neuron parameters the layers use (after the clamp)."""
    out = []
    for i, _, p in spec.neuron_parameters():
        v = p.value(params[p.name]).double()
        out.append({"layer": i, "field": p.field, "name": p.name, "shape": list(p.shape), "min": float(v.min()),
                    "mean": float(v.mean()), "max": float(v.max())})
    return out


def _judge(report: FidelityReport, observes: bool) -> None:
    """Ranking, the most distorted layer and the observe="layers" advice, in plain words."""
    obs = [lf for lf in report.layers if lf.observed and lf.distortion is not None]

    def key(lf: LayerFidelity) -> float:
        return lf.local_distortion if lf.local_distortion is not None else lf.distortion  # type: ignore[return-value]

    ranked = sorted(obs, key=key, reverse=True)
    report.ranking = [lf.name for lf in ranked]
    words: list[str] = []
    if ranked and key(ranked[0]) > 0:
        top = ranked[0]
        how = "local distortion" if top.local_distortion is not None else "distortion"
        report.most_distorted = top.name
        words.append(f"The chip distorts layer {top.name} most ({how} {key(top):.2f}: relative spike-count error"
                     + (" given the chip's own input to the layer" if top.local_distortion is not None else "") + ").")
    elif ranked:
        words.append("The chip reproduces every observed layer exactly.")
    hidden = [lf for lf in report.layers if lf.hidden]
    if not hidden:
        report.observe_layers_worth_it = False
        words.append("The network has no hidden layer: observe='layers' adds nothing over observe='output'.")
    elif not observes:
        report.observe_layers_worth_it = None
        words.append(f"The chip does not observe hidden layers ({', '.join(lf.name for lf in hidden)} not measured): "
                     "observe='layers' is not possible; use observe='output'.")
    else:
        worst = max(hidden, key=lambda lf: lf.distortion or 0.0)
        dist = worst.distortion or 0.0
        report.observe_layers_worth_it = dist >= WORTH_OBSERVING
        if report.observe_layers_worth_it:
            words.append(f"Observing every layer (cil-spl observe='layers') is likely worth it: hidden layer {worst.name} "
                         f"differs from software by {dist:.2f} (>= {WORTH_OBSERVING:g}), so output-only CIL-SPL would "
                         "compute gradients at hidden states the chip does not have.")
        else:
            words.append(f"Observing every layer is likely not worth it: the hidden layers stay within "
                         f"{WORTH_OBSERVING:g} of software (worst {worst.name}: {dist:.2f}); output-only CIL-SPL "
                         "already sees nearly the chip's hidden states.")
    report.summary = " ".join(words)


__all__ = ["fidelity", "FidelityReport", "LayerFidelity", "WORTH_OBSERVING"]
