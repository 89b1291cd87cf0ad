"""Paper-ready reports from stored results: statistics, tables, figures and the index.

``stats`` (pure: intervals, paired tests, best per column, Pareto front) → ``tables`` (Markdown and
LaTeX booktabs) and ``figures`` (matplotlib, PDF + PNG; tier diagnostics via ``tier_data``) →
``index`` (README.md) and ``html`` (index.html). :mod:`clbench.reporting.build` runs them over the runs that
:mod:`clbench.results.aggregate` loads.
"""
