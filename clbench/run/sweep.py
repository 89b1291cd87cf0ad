"""Per-strategy tuning on validation probe items: each method compared at its own best setting.

One learning rate for every strategy is unfair by construction (a tier that updates every 4 steps, or a
method with a penalty, may want another rate). So a grid entry may carry a ``sweep:`` — candidate
values for any of its options or any training field — and the experiment a default one
(``tuning.sweep``) for every trained strategy without its own::

    tuning: {sweep: {lr: [3.0e-3, 1.2e-2]}, rule: acc_given_la, la_ratio: 0.9}
    strategies:
      - all
      - {name: ewc, sweep: {lr: [3.0e-3, 1.2e-2], ewc_lambda: [100, 1000]}}   # a product of the lists
      - {name: frozen, sweep: {}}                                             # {}: not tuned

Keys are ``train.<field>``, ``options.<field>`` or a bare name (an option of the strategy, else a
training field). How it runs (:func:`tune`):

1. every candidate of every swept strategy runs with one seed (``tuning.seed``) on the *validation*
   items of the probes (``clbench.run.probe_split``), in experiment ``<name>-tuning``;
2. :func:`choose` picks one by the stated rule, reading only those runs' ``metrics.json`` (the
   primary suite): by default the best ACC among the candidates whose learning accuracy reaches
   ``la_ratio`` × the best LA (so a setting cannot win by learning nothing and forgetting nothing);
   ties go to the candidate listed first;
3. ``<results>/<name>/<stream>/<label>/tuning.json`` records what was swept, every candidate's
   validation numbers, the choice and the reason; the report shows it;
4. the grid then runs the chosen setting with every seed on the *test* items.

``tuning.pinned`` (label → setting) applies settings an earlier tuning chose, without candidate runs:
a benchmark too small a budget to tune every time still compares each method at its own setting, on
the test items, with ``tuning.json`` saying where the setting came from (``tuning.pinned_note``).
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

from clbench.config.experiment import ExperimentConfig, StrategySpec, TrainConfig
from clbench.errors import ConfigError
from clbench.paths import component, inside
from clbench.results.files import atomic_write_json, experiment_dir, load_run, read_json
from clbench.run.plan import GridEntry, resolve_entry

TRAIN_FIELDS = {f.name for f in fields(TrainConfig)} - {"threads"}
RULES = {
    "acc_given_la": "best ACC among candidates with LA >= {ratio} x the best LA",
    "acc": "best ACC",
    "learning_acc": "best learning accuracy LA",
    "forgetting": "lowest forgetting F",
}


@dataclass(frozen=True)
class Tuned:
    """A grid entry after tuning (its chosen setting applied), and the record (``None``: not tuned)."""

    entry: GridEntry
    record: dict | None


def sweep_space(spec: StrategySpec, cfg: ExperimentConfig, strategy_cls) -> dict[str, list]:
    """The spec's sweep (or the experiment's default for a trained strategy) with canonical keys
    ``train.<f>`` / ``options.<f>``; every key and value list checked."""
    raw = spec.sweep if spec.sweep is not None else (cfg.tuning.sweep if getattr(strategy_cls, "trains", True)
                                                     else {})
    where = f"strategies[{spec.run_label}].sweep" if spec.sweep is not None else "tuning.sweep"
    option_names = {f.name for f in fields(strategy_cls.Options)}
    space: dict[str, list] = {}
    for key, values in raw.items():
        section, _, name = key.rpartition(".")
        if not section:
            if name in option_names and name in TRAIN_FIELDS:
                raise ConfigError(f"{where}.{key}", f"{name!r} is both an option and a training field; "
                                  f"write options.{name} or train.{name}")
            section = "options" if name in option_names else "train" if name in TRAIN_FIELDS else ""
        allowed = sorted(f"options.{n}" for n in option_names) + sorted(f"train.{n}" for n in TRAIN_FIELDS)
        if (section, name) not in {("options", n) for n in option_names} | {("train", n) for n in TRAIN_FIELDS}:
            raise ConfigError(f"{where}.{key}", f"not an option of {spec.name!r} or a training field", allowed)
        if not isinstance(values, (list, tuple)) or not values:
            raise ConfigError(f"{where}.{key}", f"expected a non-empty list of candidate values, got {values!r}")
        space[f"{section}.{name}"] = [_number(v) for v in values]
    return space


def _number(value):
    """YAML 1.1 reads ``1e-3`` as a string; in a sweep a number is what anyone means (as ``--set`` does)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def candidates(space: dict[str, list]) -> list[dict]:
    """Every combination of the swept values, in the order the lists give (the first key varies slowest)."""
    keys = list(space)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(space[k] for k in keys))]


def apply_setting(spec: StrategySpec, setting: dict) -> StrategySpec:
    """``spec`` with ``setting`` applied: options merged into its options, training fields into its
    per-row ``train`` overrides (``clbench.run.plan`` resolves and checks both)."""
    options, train = dict(spec.options), dict(spec.train)
    for key, value in setting.items():
        section, name = key.split(".", 1)
        (options if section == "options" else train)[name] = value
    return replace(spec, options=options, train=train)


def setting_text(setting: dict) -> str:
    return ",".join(f"{k.split('.', 1)[1]}={v}" for k, v in setting.items())


def candidate_entry(cfg: ExperimentConfig, spec: StrategySpec, setting: dict) -> GridEntry:
    """The resolved grid entry of one candidate, filed under ``<label>~<setting>``."""
    return resolve_entry(replace(apply_setting(spec, setting), label=f"{spec.run_label}~{setting_text(setting)}",
                                 sweep={}), cfg)


def chosen_entry(cfg: ExperimentConfig, spec: StrategySpec, setting: dict) -> GridEntry:
    """The resolved grid entry of ``spec`` with the chosen ``setting``, under its own label."""
    return resolve_entry(apply_setting(spec, setting), cfg)


def choose(results: list[dict], rule: str, la_ratio: float, higher_is_better: bool = True) -> tuple[int, str]:
    """Index of the chosen candidate and why. ``results[i]`` holds ``acc``, ``learning_acc`` and
    ``forgetting`` of candidate ``i`` on the validation items; ties go to the lowest index."""
    sign = 1.0 if higher_is_better else -1.0

    def best(idx, key, s):
        return max(idx, key=lambda i: (s * results[i][key], -i))

    every = list(range(len(results)))
    if rule == "acc_given_la":
        top = best(every, "learning_acc", sign)
        best_la = results[top]["learning_acc"]
        bar_la = la_ratio * best_la if higher_is_better else best_la / max(la_ratio, 1e-12)
        eligible = [i for i in every if sign * results[i]["learning_acc"] >= sign * bar_la - 1e-12]
        i = best(eligible, "acc", sign)
        return i, (f"best validation ACC {results[i]['acc']:.3f} among {len(eligible)} of {len(results)} candidates "
                   f"with LA {'>=' if higher_is_better else '<='} {la_ratio:g} x best LA {best_la:.3f}")
    if rule == "forgetting":
        i = best(every, "forgetting", -1.0)
        return i, f"lowest validation forgetting F {results[i]['forgetting']:.3f} of {len(results)} candidates"
    if rule in ("acc", "learning_acc"):
        i = best(every, rule, sign)
        name = "ACC" if rule == "acc" else "LA"
        return i, f"best validation {name} {results[i][rule]:.3f} of {len(results)} candidates"
    raise ConfigError("tuning.rule", f"unknown rule {rule!r}", RULES)


def tuning_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """The experiment candidate runs are filed under: ``<name>-tuning``, the tuning seed only."""
    return replace(cfg, name=f"{cfg.name}-tuning", seeds=(cfg.tuning.seed,))


def record_path(cfg: ExperimentConfig, stream_name: str, label: str) -> Path:
    return inside(experiment_dir(cfg, stream_name), component(label), "tuning.json")


def pinned_settings(cfg: ExperimentConfig, entries: list[GridEntry]) -> dict[str, dict]:
    """``{label: setting}`` of ``tuning.pinned`` (settings chosen by an earlier tuning), keys made canonical
    and each setting resolved like a candidate.

    A pinned label that is not a row of this grid is skipped with a note on stderr, not refused: the
    pinned block is a lookup table for the config file's rows, and ``--strategies sft,replay`` narrows
    the grid to some of them (a misspelt label shows in the note, and each row's ``tuning.json`` says
    what was applied to it)."""
    labels = {e.spec.run_label: e for e in entries}
    out = {}
    for label, setting in cfg.tuning.pinned.items():
        if label not in labels:
            print(f"clbench: tuning.pinned.{label}: no row with this label in this grid (rows: "
                  f"{', '.join(sorted(labels))}); skipped", file=sys.stderr)
            continue
        if not isinstance(setting, dict) or not setting:
            raise ConfigError(f"tuning.pinned.{label}", f"expected a mapping of fields to values, got {setting!r}")
        entry = labels[label]
        probe = replace(entry.spec, sweep={k: [v] for k, v in setting.items()})
        (chosen,) = candidates(sweep_space(probe, cfg, entry.cls))
        chosen_entry(cfg, entry.spec, chosen)  # a bad value fails here, before any run
        out[label] = chosen
    return out


def pin(cfg: ExperimentConfig, stream_name: str, entry: GridEntry, setting: dict) -> Tuned:
    """A strategy with a pinned setting: no candidate runs; ``tuning.json`` says where it came from.

    A ``tuning.json`` already there from the tuning that chose this very setting (``make bench-tune``
    writes into the same experiment) is kept, so the report still shows every candidate."""
    spec = entry.spec
    tuned = chosen_entry(cfg, spec, setting)
    path = record_path(cfg, stream_name, spec.run_label)
    if path.exists():
        earlier = read_json(path)
        if not earlier.get("pinned") and earlier.get("chosen") == setting:
            return Tuned(tuned, earlier)
    note = cfg.tuning.pinned_note or "no note given"
    record = {"strategy": spec.name, "label": spec.run_label, "swept": {}, "pinned": True,
              "suite": None, "split": "validation", "seed": cfg.tuning.seed, "rule": cfg.tuning.rule,
              "rule_text": RULES[cfg.tuning.rule].format(ratio=cfg.tuning.la_ratio), "la_ratio": cfg.tuning.la_ratio,
              "candidates": [], "chosen": setting, "reason": f"pinned in the config ({note})"}
    atomic_write_json(path, record)
    return Tuned(tuned, record)


def pinned_yaml(tuned: list[Tuned]) -> str:
    """The ``tuning.pinned`` block that applies these choices without rerunning the candidates."""
    rows = [f"    {t.entry.spec.run_label}: {{" + ", ".join(f"{k}: {v}" for k, v in t.record["chosen"].items()) + "}"
            for t in tuned if t.record]
    return "tuning:\n  pinned:\n" + "\n".join(rows)


def plan_tuning(cfg: ExperimentConfig, entries: list[GridEntry]) -> dict[str, tuple[dict, list]]:
    """``{label: (space, [(setting, candidate entry), ...])}`` for every swept entry (not pinned), each
    candidate resolved (so checked) before anything runs."""
    plans = {}
    for entry in entries:
        space = sweep_space(entry.spec, cfg, entry.cls)
        if not space or entry.spec.run_label in cfg.tuning.pinned:
            continue
        plans[entry.spec.run_label] = (space, [(setting, candidate_entry(cfg, entry.spec, setting))
                                               for setting in candidates(space)])
    return plans


def select(cfg: ExperimentConfig, stream_name: str, entry: GridEntry, space: dict, rows: list, outcomes: list,
           primary: str) -> Tuned:
    """Choose among one strategy's finished candidate runs (``outcomes`` in ``rows`` order), write
    ``tuning.json``, and return the strategy with the chosen setting."""
    spec = entry.spec
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:
        raise ConfigError(str(failed[0].path), f"tuning run of {spec.run_label!r} failed ({failed[0].error}); "
                          "fix it or drop the candidate")
    results, hib = [], True
    for (setting, _), outcome in zip(rows, outcomes):
        stored = load_run(Path(outcome.path))
        suite = stored["metrics"]["suites"][primary]
        hib = stored["matrix"]["suites"][primary]["higher_is_better"]
        results.append({"setting": setting, "run": str(outcome.path),
                        **{k: suite[k] for k in ("acc", "learning_acc", "forgetting")}})
    i, reason = choose(results, cfg.tuning.rule, cfg.tuning.la_ratio, hib)
    setting = results[i]["setting"]
    record = {"strategy": spec.name, "label": spec.run_label, "swept": space, "suite": primary,
              "split": "validation", "seed": cfg.tuning.seed, "rule": cfg.tuning.rule,
              "rule_text": RULES[cfg.tuning.rule].format(ratio=cfg.tuning.la_ratio), "la_ratio": cfg.tuning.la_ratio,
              "candidates": results, "chosen": setting, "reason": reason}
    atomic_write_json(record_path(cfg, stream_name, spec.run_label), record)
    return Tuned(chosen_entry(cfg, spec, setting), record)
