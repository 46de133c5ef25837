"""``cil sweep``: a grid of ``cil train`` runs, results appended to a JSON Lines file, resumable.

Split by concern: :mod:`.grid` (the grid file and its points), :mod:`.points` (the default point
function), :mod:`.runners` (execute, LocalRunner), :mod:`.results` (the results file and its lock),
:mod:`.engine` (run_sweep, run_grid). See :mod:`.engine` for the grid format.
"""

from .engine import SweepResult, run_grid, run_sweep
from .grid import Grid, Point, SweepError, fingerprint, load_grid, point_key
from .points import subset_fraction, train_point
from .results import ResultsFile, read_results
from .runners import LocalRunner, execute, make_runner

__all__ = ["Point", "Grid", "LocalRunner", "ResultsFile", "SweepResult", "SweepError", "load_grid", "run_grid",
           "run_sweep", "execute", "train_point", "make_runner", "read_results", "point_key", "fingerprint",
           "subset_fraction"]
