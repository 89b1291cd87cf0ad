"""``clbench report``: a Markdown summary of stored runs (mean ± std over seeds, mean matrices)."""

from __future__ import annotations

from pathlib import Path

from clbench.aggregate import METRICS, mean_matrix, runs_frame
from clbench.results import atomic_write_bytes

LABELS = {"acc": "ACC", "bwt": "BWT", "fwt": "FWT", "forgetting": "Forget.", "learning_acc": "LA",
          "general_retention": "Gen. ret."}


def _fmt(mean, std, n) -> str:
    if mean != mean or mean is None:  # NaN
        return "–"
    return f"{mean:.3f} ± {std:.3f}" if n > 1 else f"{mean:.3f}"


def summary_table(df) -> str:
    """Markdown table: one row per (stream, strategy), metrics as mean ± sample std over seeds."""
    head = "| stream | strategy | seeds | " + " | ".join(LABELS[m] for m in METRICS) + " | train s |"
    lines = [head, "|" + "---|" * (len(METRICS) + 4)]
    for (stream, strat), g in df.groupby(["stream", "strategy"], sort=True):
        n = len(g)
        cells = [_fmt(g[m].astype(float).mean(), g[m].astype(float).std(ddof=1) if n > 1 else 0.0, n) for m in METRICS]
        lines.append(f"| {stream} | {strat} | {n} | " + " | ".join(cells) + f" | {g['train_seconds'].mean():.1f} |")
    return "\n".join(lines)


def matrix_table(tasks: list[str], R: list[list[float]]) -> str:
    lines = ["| after \\ on | " + " | ".join(tasks) + " |", "|---|" + "---|" * len(tasks)]
    for i, row in enumerate(R):
        lines.append(f"| {tasks[i]} | " + " | ".join("–" if x is None else f"{x:.3f}" for x in row) + " |")
    return "\n".join(lines)


def write_summary(paths, out_dir: Path, suite: str | None = None) -> Path:
    """Write ``out_dir/summary.md``; returns its path."""
    df = runs_frame(paths, suite)
    suite = df["suite"].iloc[0]
    parts = [f"# clbench summary ({suite} probes)", "",
             "Mean ± sample standard deviation over seeds. Metric definitions: `clbench/metrics.py`.", "",
             summary_table(df), ""]
    for (stream, strat), _ in df.groupby(["stream", "strategy"], sort=True):
        tasks, R = mean_matrix(paths, stream, strat, suite)
        parts += [f"## {strat} on {stream}: R[i][j], mean over seeds", "", matrix_table(tasks, R), ""]
    parts += ["## Runs", "", *[f"- `{p}`" for p in df["path"]], ""]
    path = Path(out_dir) / "summary.md"
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path
