"""Test hook: kill this process at a named point, so tests can interrupt a real run where they choose.

``CLBENCH_FAULT=<point>`` in the environment makes :func:`fault_point` send SIGKILL to the current
process when execution reaches that point — no cleanup handler runs, exactly as with ``kill -9``.
The fault-injection tests (``tests/test_faults.py``) use it; nothing else sets the variable, and with
it unset a point costs one dictionary look-up. Points:

* ``after_checkpoint:<t>`` — task ``t``'s checkpoint is on disk, its row is not (``clbench.run.one_run``);
* ``write:<file name>`` — the temporary file of an atomic write of ``<file name>`` is written but not
  yet renamed into place (``clbench.results.atomic``), e.g. ``write:after_1.json`` (a row) or
  ``write:summary.md`` (during the report).
"""

from __future__ import annotations

import os
import signal

ENV = "CLBENCH_FAULT"


def fault_point(name: str) -> None:
    """SIGKILL this process if ``$CLBENCH_FAULT`` is ``name``."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
