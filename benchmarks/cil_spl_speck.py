"""CIL-SPL re-creation (Liu et al. 2024) on the Speck-style event-driven chip.

    python benchmarks/cil_spl_speck.py --quick     # < 10 min on 2 cores
    python benchmarks/cil_spl_speck.py --docs      # full; rewrites the cil-spl section of docs/results.md

Same as ``cil bench cil-spl``; the implementation lives in ``cil_sinabs.bench`` (AGPL-3.0, it
imports sinabs). Writes benchmarks/results/cil_spl_speck.json and docs/img/speck_cil_spl.png.
"""

import sys

from cil_sinabs.bench import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
