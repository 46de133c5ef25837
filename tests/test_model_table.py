"""docs/models.md's adapter tables are generated from the adapters' declarations
(``ACCEPTED_LAYERS`` / ``REFUSED_LAYERS``), and those declarations name exactly the neuron classes
each adapter dispatches on."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("_bench_model_table", ROOT / "benchmarks" / "model_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _first_column(rows) -> str:
    return " ".join(r[0] for r in rows)


def test_the_models_doc_tables_are_generated_from_the_adapters():
    gen = _generator()
    decl = gen.declarations()
    missing = set(gen.DECLARATIONS) - set(decl)
    if missing:
        pytest.skip(f"adapters not installed: {sorted(missing)}")
    text = (ROOT / "docs" / "models.md").read_text()
    m = re.search(re.escape(gen.BEGIN) + ".*?" + re.escape(gen.END), text, flags=re.S)
    assert m, "docs/models.md has no generated models section"
    assert m.group(0) == gen.section(decl), \
        "docs/models.md adapter tables are stale: run python benchmarks/model_table.py --write docs/models.md"


def test_generated_section_replaces_only_its_markers(tmp_path):
    gen = _generator()
    md = tmp_path / "m.md"
    md.write_text(f"# M\n\nkeep\n\n{gen.BEGIN}\nSTALE-ROW\n{gen.END}\n\nafter\n")
    gen.write(md)
    text = md.read_text()
    assert "STALE-ROW" not in text and text.startswith("# M\n\nkeep\n\n") and text.endswith("\n\nafter\n")
    assert gen.section() in text
    md.write_text("no markers")
    with pytest.raises(SystemExit, match="no <!-- models:begin -->"):
        gen.write(md)
    # a row with a pipe cannot break the table
    assert "a \\| b" in gen.markdown({"x": ((("a | b", "c", "d"),), ())})


def test_snntorch_declaration_names_every_neuron_it_dispatches_on():
    pytest.importorskip("snntorch")
    a = pytest.importorskip("cil_snntorch.adapter")
    accepted, refused = _first_column(a.ACCEPTED_LAYERS), _first_column(a.REFUSED_LAYERS)
    dispatched = {c.__name__ for c in a.NEURONS + a.LEAKY_PARALLEL}
    named = set(re.findall(r"snn\.(\w+)", accepted))
    assert named == dispatched, (named ^ dispatched)
    for cls in set(re.findall(r"snn\.(\w+)\b(?![(\w])", refused)) - {"LeakyParallel"}:
        assert cls not in dispatched, cls  # a refused class the adapter accepts would be a wrong table


def test_norse_declaration_names_every_neuron_it_dispatches_on():
    pytest.importorskip("norse")
    a = pytest.importorskip("cil_norse.adapter")
    accepted = _first_column(a.ACCEPTED_LAYERS)
    for cls in a.NEURONS:
        assert re.search(rf"\b{cls.__name__}\b", accepted), cls.__name__
    names = set(re.findall(r"\b(LI\w*|IAF\w*|LSNN\w*)\b", accepted))
    assert names <= {c.__name__ for c in a.NEURONS}, names - {c.__name__ for c in a.NEURONS}


def test_nir_declaration_names_every_neuron_node():
    pytest.importorskip("nir")
    imp = pytest.importorskip("cil_nir.importer")
    accepted = _first_column(imp.ACCEPTED_LAYERS)
    for node in imp.NEURON_NODES:
        assert re.search(rf"\b{node.__name__}\b", accepted), node.__name__


def test_sinabs_declaration_names_real_sinabs_layers():
    sl = pytest.importorskip("sinabs.layers")
    a = pytest.importorskip("cil_sinabs.adapter")
    for name in re.findall(r"\b((?:IAF|LIF|ALIF|ExpLeak)\w*)\b", _first_column(a.ACCEPTED_LAYERS)):
        assert hasattr(sl, name), name


def test_rockpool_declaration_names_every_module_it_dispatches_on():
    pytest.importorskip("cil_rockpool")
    a = pytest.importorskip("cil_rockpool.adapter")
    accepted, refused = _first_column(a.ACCEPTED_LAYERS), _first_column(a.REFUSED_LAYERS)
    for cls in (a.LinearTorch, a.LIFTorch):  # the two classes RockpoolAdapter.to_spec dispatches on
        assert re.search(rf"\b{cls.__name__}\b", accepted), cls.__name__
    assert "has_rec" in accepted and "max_spikes_per_dt" in accepted
    for name in ("LIFBitshiftTorch", "aLIFTorch", "ExpSynTorch", "noise_std", "bias != 0", "trainable tau_mem"):
        assert name in refused, name
