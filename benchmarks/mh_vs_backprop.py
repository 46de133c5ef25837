"""MH vs backprop (and CIL-SPL) on the analog-mismatch chip: Safa et al. 2024 re-creation.

Thin wrapper around :mod:`cil_analog.bench` (also ``cil bench mh-vs-backprop``)::

    python benchmarks/mh_vs_backprop.py --quick         # < 5 min on 2 cores
    python benchmarks/mh_vs_backprop.py --docs          # full run, rewrites docs/results.md section
    python benchmarks/mh_vs_backprop.py --cost-only     # forward-cost ratio analog/ideal only
"""

import sys

from cil_analog.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
