"""clbench: a continual-learning benchmark for language models.

Where things are: ``streams`` (tasks and probe data), ``strategy`` (the plugin API and its hook order),
``trainer`` (the step loop a strategy hooks into), ``probes`` (how a probe is scored), ``runner`` (one
run, resumable), ``grid`` (many runs), ``metrics`` (formulas), ``results`` (the on-disk format),
``report`` (tables from stored results), ``cli`` (the ``clbench`` command).
"""

__version__ = "0.1.0"
