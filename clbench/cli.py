"""Command line: ``clbench run | new | list | models | report | perf | coverage | crosscheck``.

    clbench run configs/bench.yaml                       # the default grid
    clbench run --smoke --strategies sft,my_method       # a new strategy next to sft in about a minute
    clbench run --dry-run configs/bench.yaml             # what it would run, resume and skip; nothing written
    clbench new strategy my_method                       # strategies/my_method.py and its test
    clbench list                                         # strategies and their options
    clbench models                                       # named real models: installed, converted, licence
    clbench report results/bench -o reports/bench        # tables, figures, index of stored results
    clbench perf                                         # training tokens/s and eval items/s
    clbench coverage                                     # do the report's intervals cover? (synthetic truth)
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from pathlib import Path

from clbench.errors import ClbenchError, ConfigError, environment_error
from clbench.paths import writable_folder

# each shortcut flag of ``clbench run`` is a ``--set`` override (over the YAML file); a flag and a --set of one
# field are refused
SHORTCUTS = {"stream": "stream={}", "strategies": "strategies=[{}]", "seeds": "seeds=[{}]",
             "name": "name={}", "results": "results_dir={}", "jobs": "jobs={}",
             "allow_code": "allow_code=true", "executor": "executor.kind={}",
             "address": "executor.address={}"}


def _grid_given(args) -> bool:
    """Whether the command names an experiment: a config file, a preset, a ``--set`` or a shortcut flag."""
    return bool(args.config or args.set or getattr(args, "smoke", False)
                or any(getattr(args, flag) is not None and getattr(args, flag) is not False for flag in SHORTCUTS))


def _config(args):
    from clbench.config.experiment import load_config

    shortcuts = SHORTCUTS
    preset = []
    if getattr(args, "smoke", False):
        from clbench.config.presets import SMOKE
        from clbench.config.presets import overrides as preset_overrides

        preset = preset_overrides(SMOKE)  # first: the user's --set and flags win over it
    given = [flag for flag in shortcuts if getattr(args, flag) is not None and getattr(args, flag) is not False]
    # (``--jobs 0`` is given, and refused by the bound, not dropped as falsy)
    overrides = preset + list(args.set or []) + [shortcuts[flag].format(getattr(args, flag)) for flag in given]
    flags = {shortcuts[flag].split("=")[0]: f"--{flag.replace('_', '-')}" for flag in given}
    _refuse_flag_and_set(flags, args.set or [])
    return load_config(args.config, overrides, flags)


_ABSENT = object()


def _refuse_flag_and_set(flags: dict[str, str], sets: list[str]) -> None:
    """A shortcut flag and a ``--set`` of the same field (``--strategies sft`` with ``--set strategies=[...]``)
    are refused: one of them would be dropped without a word, and which one is not obvious from the command."""
    from clbench.config.experiment import parse_override

    for item in sets:
        if "=" not in item:
            continue  # malformed: load_config says so, naming the --set
        typed = item.split("=", 1)[0].strip()
        for key, flag in flags.items():
            if typed == key or typed.startswith(key + "."):
                clash = True
            elif key.startswith(typed + "."):  # --set executor={kind: ray} with --executor: does it set kind?
                _, value = parse_override(item)
                for k in key[len(typed) + 1:].split("."):
                    value = value.get(k, _ABSENT) if isinstance(value, dict) else _ABSENT
                clash = value is not _ABSENT
            else:
                clash = False
            if clash:
                raise ConfigError(flag, f"given together with --set {typed}, which sets the same field; "
                                        "give one of them")


def _print_report(readme: Path, results=()) -> None:
    """The summary table(s) of a freshly written report, then where the rest is (and the training curves)."""
    for table in sorted(readme.parent.glob("*/tables/summary.md")):
        print(f"\n{table.read_text()}")
    print(f"clbench: report written to {readme} (and {readme.parent / 'index.html'})")
    from clbench.results.tensorboard import tensorboard_command

    command = tensorboard_command(results)
    if command:
        print(f"clbench: training curves: {command}")


def cmd_run(args) -> int:
    from clbench.reporting.build import build_report
    from clbench.results.files import experiment_dir
    from clbench.run.grid import run_grid

    if not _grid_given(args) and not args.dry_run:  # the default grid is hours of work: never started by accident
        raise ClbenchError("no experiment given to `clbench run`; run the benchmark with `clbench run configs/bench.yaml`, "
                           "try a strategy in a minute with `clbench run --smoke`, or see what a config runs with "
                           "`clbench run --dry-run CONFIG`")
    cfg = _config(args)
    if args.dry_run:
        from clbench.run.dry_run import dry_run

        dry_run(cfg)
        return 0
    if not args.no_report:
        writable_folder(args.report_dir or f"reports/{cfg.name}", "--report-dir")
    results = run_grid(cfg, progress=not args.quiet, wait=args.wait)
    root = experiment_dir(cfg)  # where the runs were written (the name made a folder name as there)
    busy = [path for path, status in results if status == "locked"]
    failed = [path for path, status in results if status == "failed"]
    print(f"\nclbench: {len(results) - len(busy) - len(failed)} runs finished; results in {root}")
    if busy:
        print(f"clbench: {len(busy)} run(s) skipped because another clbench process is writing them "
              "(--wait waits for it)", file=sys.stderr)
    if not args.no_report:
        if cfg.seeds:
            _print_report(build_report([root], Path(args.report_dir or f"reports/{cfg.name}")), [root])
        else:  # a tuning-only grid (configs/bench_real_tune.yaml): its product is each row's tuning.json
            print(f"clbench: no report: the experiment has no seeds, so it ran only tuning candidates; each "
                  f"row's choice is in {root}/<stream>/<label>/tuning.json")
    if failed:
        print(f"clbench: {len(failed)} runs failed (listed above): " + ", ".join(map(str, failed)), file=sys.stderr)
        return 1
    return 0


def cmd_new(args) -> int:
    from clbench.scaffold import write_strategy

    for path in write_strategy(args.name, Path(args.root)):
        print(f"clbench: wrote {path}")
    print(f"clbench: try it next to sft: clbench run --smoke --strategies sft,{args.name}\n"
          f"clbench: its test: python -m pytest -q tests/test_strategy_{args.name}.py")
    return 0


def cmd_list(args) -> int:
    from clbench.config.options import describe_fields
    from clbench.train import registry

    def show(name, cls):
        print(f"{name}: {cls.describe()}  [{cls.__module__}; backends: {', '.join(cls.backends)}]")
        for fname, tp, default, help_ in describe_fields(cls.Options):
            print(f"    {fname} ({tp}, default {default!r}): {help_}")

    print("strategies (a grid entry's name):")
    for name in registry.names():
        show(name, registry.get(name))
    print("\nplugins (added to any strategy with a grid entry's `with: [...]`):")
    for name in registry.plugin_names():
        show(name, registry.get_plugin(name))
    return 0


def _size(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.0f} MB"


def cmd_models(args) -> int:
    from clbench.config.experiment import load_config
    from clbench.modeling.named import model_status

    cache = load_config(None, [f"cache_dir={args.cache_dir}"] if args.cache_dir else []).resolved_cache_dir()
    for m in model_status(cache):
        state = "ready" if m["ready"] else "installed, converted on first use" if m["installed"] else "not installed"
        print(f"{m['name']}: {state}; package {m['package']} (GGUF {_size(m['gguf_bytes'])}), "
              f"checkpoint {_size(m['checkpoint_bytes'])}; licence {m['licence']}")
        print(f"    {m['weights']}; upstream {m['upstream']}")
        where = m["path"] if m["ready"] else f"install: {m['install']}" if not m["installed"] else f"cache: {cache}"
        print(f"    {where}")
    return 0


def cmd_report(args) -> int:
    from clbench.reporting.build import build_report

    _print_report(build_report(args.results, Path(args.output), args.suite, args.reference, not args.no_figures,
                               strict=args.strict), args.results)
    return 0


def cmd_perf(args) -> int:
    from clbench.bench.perf import main as perf_main

    return perf_main(args)


def cmd_crosscheck(args) -> int:
    import torch

    from clbench.bench.crosscheck import CrossCheckConfig, render_table, run_crosscheck

    torch.set_num_threads(args.threads)
    cfg = CrossCheckConfig(seeds=tuple(int(s) for s in args.seeds.split(",")))
    results = run_crosscheck(cfg)
    table = render_table(results, cfg)
    print(table)
    path = Path(args.output) / "crosscheck.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(table)
    print(f"clbench: cross-check written to {path}")
    outside = [r.method for r in results if abs(r.difference) > cfg.tolerance]
    if outside:
        print(f"clbench: clbench and Avalanche differ by more than {cfg.tolerance} on: {', '.join(outside)}",
              file=sys.stderr)
        return 1
    return 0


def cmd_coverage(args) -> int:
    from clbench.bench.coverage import run_coverage

    seeds = tuple(int(s) for s in args.seeds.split(","))
    out = run_coverage(Path(args.output), experiments=args.experiments, seeds=seeds, seed=args.seed)
    print((Path(args.output) / "coverage.md").read_text())
    print(f"clbench: coverage written to {Path(args.output) / 'coverage.json'} and coverage.md "
          f"({out['seconds']:.0f} s)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clbench", description="Continual-learning benchmark for language models.")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the traceback of any error")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", parents=[common],
                       help="run a grid of (strategy, seed) on a stream; finished runs are skipped")
    r.add_argument("config", nargs="?", help="experiment YAML (configs/*.yaml); defaults apply without one")
    r.add_argument("--stream", help="stream YAML or shipped stream name (default, micro)")
    r.add_argument("--strategies", help="comma-separated strategy names, or 'all'")
    r.add_argument("--seeds", help="comma-separated seeds, e.g. 0,1,2")
    r.add_argument("--name", help="experiment name (results/<name>/...)")
    r.add_argument("--results", help="results directory")
    r.add_argument("--jobs", type=int, help="parallel runs")
    r.add_argument("--executor", choices=["local", "ray"], help="where runs execute (default local; "
                   "ray needs the 'distributed' extra; docs/distributed.md)")
    r.add_argument("--address", help="ray: cluster address, e.g. auto or ray://head:10001 (default: a local Ray)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config field, e.g. train.lr=1e-3")
    r.add_argument("--report-dir", help="where the report goes (default reports/<name>)")
    r.add_argument("--no-report", action="store_true")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--allow-code", action="store_true",
                   help="let task YAML in the stream's lm-eval folders run Python (!function); see docs/streams.md")
    r.add_argument("--wait", action="store_true",
                   help="wait for a run another clbench process is writing, instead of skipping it")
    r.add_argument("--dry-run", action="store_true",
                   help="print the resolved rows, the runs to do, resume and skip, and a time estimate from stored "
                        "runs; builds, loads and writes nothing")
    r.add_argument("--smoke", action="store_true",
                   help="the smoke preset: micro model and stream, one seed, sft (clbench/config/presets.py); "
                        "with --strategies sft,NAME a new strategy runs next to sft in a minute or two")
    r.set_defaults(func=cmd_run)

    new = sub.add_parser("new", parents=[common], help="write a new strategy file and its test (clbench new "
                                                       "strategy NAME)")
    new.add_argument("kind", choices=["strategy"], help="what to write")
    new.add_argument("name", help="the strategy's name: lower case, digits and underscores (my_method)")
    new.add_argument("--root", default=".", help="the clbench checkout to write into (default: here)")
    new.set_defaults(func=cmd_new)

    ls = sub.add_parser("list", parents=[common],
                        help="registered strategies and their options")
    ls.set_defaults(func=cmd_list)

    mo = sub.add_parser("models", parents=[common],
                        help="named real models (model.name): installed, converted, size, licence")
    mo.add_argument("--cache-dir", help="clbench cache (default $CLBENCH_CACHE or ~/.cache/clbench)")
    mo.set_defaults(func=cmd_models)

    rep = sub.add_parser("report", parents=[common],
                         help="tables (Markdown + LaTeX), figures (PDF + PNG) and an index from stored "
                              "results (never retrains)")
    rep.add_argument("results", nargs="+",
                     help="results directories (any level: experiment, stream, run); a strategy label that two "
                          "of them ran with the same seed is compared, shown once per folder as 'LABEL [TAG]' "
                          "(TAG: the shortest trailing part of the folder's path that no other given folder "
                          "ends with), and a reference shown so is the first given folder's row")
    rep.add_argument("-o", "--output", required=True, help="report directory")
    rep.add_argument("--suite", help="probe suite (default: the stream's primary)")
    rep.add_argument("--reference", default="sft", help="strategy label the significance marks compare with")
    rep.add_argument("--no-figures", action="store_true", help="tables and index only")
    rep.add_argument("--strict", action="store_true", help="an unreadable or unfinished run is an error")
    rep.set_defaults(func=cmd_report)

    perf = sub.add_parser("perf", parents=[common],
                          help="benchmark: training tokens/s and evaluation items/s")
    perf.add_argument("--steps", type=int, default=30)
    perf.add_argument("--strategies", default="all",
                      help="comma-separated strategies (or variant labels) whose step time is compared with sft")
    perf.add_argument("--model", help="real model for the lm-eval comparison and training speed: a checkpoint "
                                      "folder or a named model (default: smollm2-135m when installed)")
    perf.add_argument("--stream", help="stream whose first task's items are scored (default: real, else default)")
    perf.add_argument("--items", type=int, default=32, help="items per probe kind in the lm-eval comparison")
    perf.add_argument("--eval-batch", type=int, default=16, help="batch size of both scorers")
    perf.add_argument("--real-steps", type=int, default=8, help="timed steps per repetition on the real model")
    perf.set_defaults(func=cmd_perf)

    cov = sub.add_parser("coverage", parents=[common],
                         help="benchmark of the statistics: coverage and false-positive rates of the report's "
                              "intervals and marks on synthetic experiments with a known truth")
    cov.add_argument("--experiments", type=int, default=500, help="synthetic experiments per design and seed count")
    cov.add_argument("--seeds", default="3,5", help="comma-separated numbers of seeds per experiment")
    cov.add_argument("--seed", type=int, default=0, help="seed of the simulation")
    cov.add_argument("-o", "--output", default="reports/coverage", help="where coverage.json and coverage.md go")
    cov.set_defaults(func=cmd_coverage)

    cc = sub.add_parser("crosscheck", parents=[common],
                        help="clbench vs Avalanche (Naive/EWC/Replay) on split digits")
    cc.add_argument("--seeds", default="0,1,2", help="comma-separated seeds")
    cc.add_argument("-o", "--output", default="reports/crosscheck", help="where crosscheck.md goes")
    cc.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    cc.set_defaults(func=cmd_crosscheck)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Library noise that says nothing about the user's run: transformers' per-model "Loading weights"
    # bar (clbench shows its own progress) and a deprecation warning peft triggers inside transformers.
    # Environment variables, so that worker processes inherit them.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ClbenchError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"clbench: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        cause = environment_error(exc)
        if cause is None:
            return _internal_error(exc, args.debug)
        if args.debug:
            traceback.print_exc()
        print(f"clbench: error: {cause}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nclbench: interrupted; finished tasks are kept and the next run resumes from them", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - anything else is a bug in clbench: one line, traceback on request
        return _internal_error(exc, args.debug)


def _internal_error(exc: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exc()
        return 1
    print(f"clbench: internal error (a bug, please report it): {type(exc).__name__}: {exc}\n"
          "clbench: rerun with --debug for the traceback", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
