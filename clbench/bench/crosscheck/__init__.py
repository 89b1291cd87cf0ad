"""The outside reference: clbench's strategies and Avalanche's on the same class-incremental stream.

``clbench crosscheck`` (or ``make crosscheck``) trains a small MLP on split digits — scikit-learn's
bundled 8×8 digits, 5 experiences of 2 classes, no download — with Avalanche 0.6's own Naive, EWC and
Replay strategies and with clbench's ``sft``, ``ewc`` and ``replay`` strategy classes driven through
the same hooks the language-model runner calls, on identical data, initial weights, optimizer, epochs
and batch size. Both sides are scored by one evaluation function, so only the training differs.

* :mod:`clbench.bench.crosscheck.digits` — the stream (records for clbench, an Avalanche benchmark of the same samples);
* :mod:`clbench.bench.crosscheck.model` — the MLP;
* :mod:`clbench.bench.crosscheck.loop` — the minimal classification loop over clbench's Strategy hooks;
* :mod:`clbench.bench.crosscheck.avalanche_side` — the same training with Avalanche's strategies;
* :mod:`clbench.bench.crosscheck.compare` — both sides over seeds, the table and the tolerance.
"""

from clbench.bench.crosscheck.compare import CrossCheckConfig, render_table, run_crosscheck

__all__ = ["CrossCheckConfig", "render_table", "run_crosscheck"]
