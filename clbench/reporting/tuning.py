"""The tuning table: per strategy, what was swept, each candidate's validation numbers, what was chosen and why.

Read from ``<results>/<experiment>/<stream>/<label>/tuning.json`` (written by ``clbench.run.sweep``
before the strategy's test runs), found next to the runs the report reads.
"""

from __future__ import annotations

from pathlib import Path

from clbench.reporting.tables import Cell, Table, fmt
from clbench.results.aggregate import Run
from clbench.results.files import read_json


def label_dir(run: Run) -> Path:
    """The strategy label's folder of a run (above ``order-<name>/`` for a non-given order)."""
    parent = Path(run.path).parent
    return parent.parent if parent.name.startswith("order-") else parent


def tuning_records(groups: dict[str, list[Run]]) -> dict[str, dict]:
    """``{strategy label: tuning.json}`` for every tuned strategy among the report's runs."""
    out = {}
    for runs in groups.values():
        for run in runs:
            path = label_dir(run) / "tuning.json"
            label = run.strategy_label
            if label not in out and path.exists():
                out[label] = read_json(path)
    return dict(sorted(out.items()))


def _setting(setting: dict) -> str:
    return ", ".join(f"{k.split('.', 1)[-1]}={v}" for k, v in setting.items())


def tied_with_choice(record: dict) -> list[int]:
    """Indices of the candidates that score exactly as the chosen one on what the rule decides by (the
    chosen one included); ``clbench.run.sweep.choose`` gives such a tie to the candidate listed first.
    Empty for a pinned setting (no candidates)."""
    cands = record.get("candidates") or []
    if not cands:
        return []
    key = {"acc_given_la": "acc", "acc": "acc", "learning_acc": "learning_acc", "forgetting": "forgetting"}.get(
        record.get("rule"), "acc")
    chosen = next((i for i, c in enumerate(cands) if c["setting"] == record["chosen"]), None)
    if chosen is None:
        return []
    eligible = range(len(cands))
    if record.get("rule") == "acc_given_la":  # only the candidates that reached the LA bar compete on ACC
        bar = record.get("la_ratio", 0.9) * max(c["learning_acc"] for c in cands)
        eligible = [i for i in eligible if cands[i]["learning_acc"] >= bar - 1e-12]
    return [i for i in eligible if cands[i][key] == cands[chosen][key]]


def tuning_table(records: dict[str, dict], stream: str, slug: str) -> Table | None:
    if not records:
        return None
    rows = []
    for label, rec in records.items():
        swept = "; ".join(f"{k.split('.', 1)[-1]} ∈ {{{', '.join(map(str, v))}}}" for k, v in rec["swept"].items())
        cands = "; ".join(f"{_setting(c['setting'])}: ACC {fmt(c['acc'], 3)}, LA {fmt(c['learning_acc'], 3)}"
                          for c in rec["candidates"])
        why = rec["reason"]
        tied = tied_with_choice(rec)
        if len(tied) > 1:
            why += (f"; a tie: {len(tied)} of {len(rec['candidates'])} candidates score the same, the first "
                    f"listed is taken")
        if rec.get("pinned"):
            swept, cands = "pinned", "–"
        rows.append((Cell(label), Cell(swept), Cell(cands), Cell(_setting(rec["chosen"])), Cell(why)))
    first = next(iter(records.values()))
    caption = (f"Per-strategy tuning on {stream}: candidates (seed {first['seed']}) scored on validation items; "
               f"the other tables score the choice on test items.")
    notes = (f"Per-strategy tuning on stream {stream}: each candidate ran with seed {first['seed']} and was scored "
             f"on the validation probe items only; the other tables score the chosen setting on the disjoint "
             f"test items. Rule: {first['rule_text']}; ties go to the candidate listed first, and the Why column "
             f"says where that happened. Pinned: a setting chosen by an earlier tuning, given in the config.")
    return Table("Tuning", f"tab:{slug}-tuning", caption, ("Strategy", "Swept", "Validation (candidate: ACC, LA)",
                                                           "Chosen", "Why"), "lXXlX", tuple(rows),
                 list(records.values()), notes)
