"""Streams: an ordered list of tasks, each with training records and probe suites, loaded from YAML.

A stream file (``tasks/*.yaml``; the full format with every source kind is in ``docs/streams.md``)::

    name: general-medical-notes
    version: 1
    primary_metric: qa                  # the probe suite the headline numbers use
    tasks:
      - name: general
        pretrained: true                # learned by the base model, not by the strategy (row 0 = base)
        generated: {domain: general, entities: 40}
        probes:                         # optional: added to the generated qa/mc/ppl (same name = replaced)
          - {name: gen_mc, kind: lm_eval, task: clbench_general_mc, include_path: lm_eval, metric: acc}
      - name: emails                    # a user task: local files (JSONL, CSV, Parquet, save_to_disk folder)
        train: {path: data/emails_train.csv, fields: {prompt: question, completion: answer}}
        probes:
          - {name: qa, kind: exact_match, path: data/emails_qa.jsonl}
          - {name: mc, kind: multiple_choice, path: data/emails_mc.parquet}
          - {name: ppl, kind: perplexity, path: data/emails_heldout, split: test}
    pretrain_background:                # embedded model only: extra pretraining text (language, not facts)
      - {domain: medical, entities: 16, seed: 1000}

Record shapes: training ``{"text"}`` or ``{"prompt","completion"}``; ``exact_match`` probes
``{"prompt","answer"}``; ``multiple_choice`` ``{"prompt","choices","label"}``; ``perplexity``
``{"text"}``. An ``id`` field is optional (the line or row number is used). ``fields`` maps these names
to a file's own columns (``clbench.data.readers``). ``lm_eval`` suites are scored by an lm-eval task
(``clbench.eval.lm_eval_suite``). Relative paths are relative to the stream file. Errors name the file, the
line (or row) and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Literal

from clbench.config.experiment import MAX_SEED
from clbench.config.names import check_name
from clbench.config.options import from_dict, opt, shown
from clbench.config.yaml_file import at_line, load_yaml_lines
from clbench.data.answers import normalize
from clbench.data.probe_kinds import NATIVE_KINDS, PROBE_KINDS
from clbench.data.readers import SourceSpec, load_records
from clbench.errors import ConfigError

TRAIN_FIELDS = {"text": str, "prompt": str, "completion": str}
# the suites a generated task brings, by name: one per native kind (clbench.data.probe_kinds)
GENERATED_SUITES = {p.generated_suite: k for k, p in PROBE_KINDS.items() if p.generated_suite}
MAX_ENTITIES = 10_000  # generated entities of one task: ~3 facts each, every one a training record and 3 probe items
STREAMS_DIR = Path(__file__).resolve().parent.parent / "tasks"


@dataclass(frozen=True)
class GeneratedSpec:
    domain: str
    entities: int = opt(16, f"fictional entities (1 to {MAX_ENTITIES:,}; a domain may need more, e.g. general 4)",
                        ge=1, le=MAX_ENTITIES)
    seed: int | None = opt(None, "generator seed; null = the stream's generator_seed", ge=0, le=MAX_SEED)


@dataclass(frozen=True)
class ProbeSpec:
    """A native probe suite read from a local file (fields as in :class:`clbench.data.readers.SourceSpec`)."""

    name: str
    kind: Literal[NATIVE_KINDS]  # every kind of clbench.data.probe_kinds but lm_eval
    path: str
    format: Literal["auto", "jsonl", "csv", "parquet", "disk"] = "auto"
    fields: dict = field(default_factory=dict)
    split: str | None = None
    limit: int | None = opt(None, "score only the first N items (a prefix: order the file so that it is a fair "
                                  "sample, as tasks/real_knowledge/ does)", ge=1)
    until: tuple[str, ...] = opt((), "exact_match: strings that also end a generated answer (the first newline "
                                     "always does), e.g. ['.', ','] for cloze prompts")

    @property
    def source(self) -> SourceSpec:
        return SourceSpec(self.path, self.format, self.fields, self.split)


@dataclass(frozen=True)
class LmEvalProbeSpec:
    """A probe suite scored by an lm-eval task through lm-eval's evaluator (``clbench.eval.lm_eval_suite``)."""

    name: str
    kind: Literal["lm_eval"]
    task: str  # lm-eval task or group name
    include_path: str | None = opt(None, "folder of task YAML, relative to the stream; null = built-in tasks")
    metric: str = opt("acc", "the task's metric that is the suite's score")
    filter: str = opt("none", "lm-eval filter the metric is read after ('none' unless the task has filters)")
    num_fewshot: int | None = opt(None, "few-shot examples; null = the task's own setting (0 if unset)", ge=0,
                                  le=1000)
    limit: int | None = opt(None, "score only the first N documents (smoke runs)", ge=1)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    pretrained: bool = False
    generated: GeneratedSpec | None = None
    train: SourceSpec | None = None
    probes: tuple[dict, ...] = ()  # ProbeSpec or LmEvalProbeSpec, chosen by 'kind' (parse_probe)
    # where the task's data come from (package, version, licence, item counts): recorded in every run's
    # provenance.json, never read to build the task
    source: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    version: int = 1
    description: str = ""
    primary_metric: str = opt("qa", "probe suite behind the headline numbers")
    generator_seed: int = opt(0, "seed of the generated tasks", ge=0, le=MAX_SEED)
    pretrain_background: tuple[GeneratedSpec, ...] = ()
    known_subset: bool = opt(False, "also score pretrained tasks on the items the base model answered correctly "
                                    "(suites <name>_known; clbench.results.breakdown)")
    allow_code: bool = opt(False, "let task YAML in this stream's lm-eval folders import Python (!function)")


@dataclass(frozen=True)
class ProbeSuite:
    """Items of a native suite, or (``kind == "lm_eval"``, no items) the lm-eval task it runs."""

    name: str
    kind: str
    items: tuple[dict, ...]
    config: dict = field(default_factory=dict)  # lm_eval: task, include_path, metric, filter, digest, ...


@dataclass(frozen=True)
class Task:
    name: str
    train: tuple[dict, ...]
    probes: tuple[ProbeSuite, ...]
    pretrained: bool = False


@dataclass(frozen=True)
class Stream:
    spec: StreamSpec
    tasks: tuple[Task, ...]
    background: tuple[dict, ...] = field(default=(), repr=False)  # extra pretraining records
    source: str = ""
    code_allowed: bool = False  # --allow-code or the file's allow_code (echoed in provenance.json)
    # how this stream was derived from its file (``clbench.run.orders``, ``clbench.run.probe_split``):
    # {"order": ..., "probe_split": ..., "source_fingerprint": ...}; recorded in every run's config.json
    derived: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name

    # Which tasks are pretrained, worked out here only. A pretrained task (``pretrained: true``, always
    # before the trained ones) is learned by the base model: no strategy trains on it (with the embedded
    # model its training records are the pretraining data, with a real model they are never trained on),
    # it is scored once, on the base model (its row of R is the base row), and LA leaves it out while
    # general retention is measured on it.
    @property
    def pretrained_flags(self) -> list[bool]:
        """For each task, whether it is pretrained (what ``config.json`` records as ``stream.pretrained``)."""
        return [t.pretrained for t in self.tasks]

    @property
    def pretrained_indices(self) -> list[int]:
        """Positions of the pretrained tasks (the ``general`` tasks of ``clbench.results.metrics``)."""
        return [i for i, t in enumerate(self.tasks) if t.pretrained]

    @property
    def trained_indices(self) -> list[int]:
        """Positions of the tasks a strategy trains on, in stream order."""
        return [i for i, t in enumerate(self.tasks) if not t.pretrained]

    @property
    def pretrained_tasks(self) -> list[Task]:
        return [t for t in self.tasks if t.pretrained]

    @property
    def trained_tasks(self) -> list[Task]:
        return [t for t in self.tasks if not t.pretrained]

    @property
    def data_sources(self) -> dict[str, dict]:
        """The ``source`` entries of the stream file's tasks, by task name (for ``provenance.json``)."""
        return {t.name: t.source for t in self.spec.tasks if t.source}

    @property
    def suite_names(self) -> list[str]:
        """Every probe-suite name in the stream, in first-seen order (one accuracy matrix each)."""
        return list(dict.fromkeys(p.name for t in self.tasks for p in t.probes))

    @property
    def file_fingerprint(self) -> str:
        """The fingerprint of the stream file this stream was derived from (its own if not derived)."""
        return self.derived.get("source_fingerprint") or self.fingerprint()

    def fingerprint(self) -> str:
        """A hash of every record: results and cached base models are keyed by it."""
        h = hashlib.sha256()
        encoder = json.JSONEncoder(sort_keys=True)  # chunk by chunk: the bytes of json.dumps, never all at once
        for t in self.tasks:
            suites = [(p.name, p.kind, p.items) + ((_portable(p.config),) if p.config else ())
                      for p in t.probes]
            for chunk in encoder.iterencode([t.name, t.pretrained, t.train, suites]):
                h.update(chunk.encode())
        for chunk in encoder.iterencode(self.background):
            h.update(chunk.encode())
        return h.hexdigest()[:16]


def _portable(config: dict) -> dict:
    """A suite config without machine-specific paths (file contents are in its ``digest``)."""
    return {k: v for k, v in config.items() if k != "include_path"}


def _validate_record(rec: object, required: dict[str, type], where: str) -> dict:
    if not isinstance(rec, dict):
        raise ConfigError(where, f"expected a JSON object, got {type(rec).__name__}")
    for key, tp in required.items():
        if key not in rec:
            raise ConfigError(where, f"missing field {key!r}", list(required))
        if not isinstance(rec[key], tp) or (tp is int and isinstance(rec[key], bool)):
            raise ConfigError(where, f"field {key!r} must be {tp.__name__}, got {rec[key]!r}")
    if "choices" in required:
        choices = rec["choices"]
        if not all(isinstance(c, str) for c in choices) or len(choices) < 2:
            raise ConfigError(where, "field 'choices' must be a list of at least two strings")
        first: dict[str, int] = {}
        for i, c in enumerate(choices):
            if not c.strip():
                raise ConfigError(where, f"choices[{i}] is empty: a choice the model can be scored on has text")
            if c in first:
                raise ConfigError(where, f"choices[{first[c]}] and choices[{i}] are the same ({shown(c)}): the "
                                  "item could not tell them apart")
            first[c] = i
        if not 0 <= rec["label"] < len(choices):
            raise ConfigError(where, f"field 'label' is {rec['label']}, outside 0..{len(choices) - 1}")
    return rec


def _check_answers(rec: dict, where: str) -> None:
    """An exact-match answer (and each alias) has text after normalisation — an empty one would count an
    empty prediction as right."""
    answers = [("answer", rec["answer"]), *((f"aliases[{i}]", a) for i, a in enumerate(rec.get("aliases", ())))]
    for name, value in answers:
        if not normalize(value):
            raise ConfigError(where, f"field {name!r} is {shown(value)}, empty once normalised (case, spaces, quotes, "
                              "a final '.'): every prediction would have to be empty to match it")


def _validate_optional(rec: dict, optional: dict[str, type], where: str) -> None:
    for key, tp in optional.items():
        if key in rec and not isinstance(rec[key], tp):
            raise ConfigError(where, f"field {key!r} must be {tp.__name__}, got {rec[key]!r}")
    if not all(isinstance(a, str) for a in rec.get("aliases", ())):
        raise ConfigError(where, "field 'aliases' must be a list of strings")


def _validate_train(rec: object, where: str) -> dict:
    if isinstance(rec, dict) and "text" in rec:
        _validate_record(rec, {"text": str}, where)
        if not rec["text"].strip():
            raise ConfigError(where, "field 'text' is empty: a training record needs text to learn")
        return rec
    if isinstance(rec, dict) and "prompt" in rec:
        _validate_record(rec, {"prompt": str, "completion": str}, where)
        if not rec["completion"].strip():
            raise ConfigError(where, "field 'completion' is empty: a training record needs text to learn")
        return rec
    raise ConfigError(where, "a training record needs 'text' or 'prompt'+'completion'", ["text", "prompt", "completion"])


GENERATOR_GROUP = "clbench.generators"


def generators() -> dict:
    """Generated domains by name, from the ``clbench.generators`` entry points (each names a function
    ``(domain, n_entities, seed) -> {"train", "qa", "mc", "ppl"}``; clbench's own are in
    ``tasks/generators/``). The core never imports a generator module by name."""
    return {ep.name: ep for ep in entry_points(group=GENERATOR_GROUP)}


def _generated(spec: GeneratedSpec, default_seed: int, where: str) -> dict[str, list[dict]]:
    known = generators()
    if spec.domain not in known:
        raise ConfigError(f"{where}.domain", f"unknown generated domain {spec.domain!r}", known)
    build = known[spec.domain].load()
    try:
        return build(spec.domain, spec.entities, default_seed if spec.seed is None else spec.seed)
    except ValueError as exc:  # a generator's own limit (too few entities for its multiple-choice items, ...)
        raise ConfigError(f"{where}.entities", f"generator {spec.domain!r}: {exc}") from None


def parse_probe(raw: object, where: str) -> ProbeSpec | LmEvalProbeSpec:
    """A probe entry of a stream file, as the spec class of its ``kind`` (unknown keys name the allowed)."""
    if not isinstance(raw, dict):
        raise ConfigError(where, f"expected a mapping, got {raw!r}")
    if raw.get("kind") not in PROBE_KINDS:
        raise ConfigError(f"{where}.kind", f"unknown probe kind {raw.get('kind')!r}", tuple(PROBE_KINDS))
    return from_dict(LmEvalProbeSpec if raw["kind"] == "lm_eval" else ProbeSpec, raw, where)


def _load_suite(spec: ProbeSpec | LmEvalProbeSpec, base: Path, where: str, allow_code: bool) -> ProbeSuite:
    if isinstance(spec, LmEvalProbeSpec):
        from clbench.data.lm_eval_tasks import resolve_suite  # imports lm-eval: only for streams that use it

        return ProbeSuite(spec.name, spec.kind, (), resolve_suite(spec, base, where, allow_code))
    if spec.until and spec.kind != "exact_match":
        raise ConfigError(f"{where}.until", f"'until' applies to exact_match suites, not {spec.kind}")
    for i, stop in enumerate(spec.until):
        if not stop:
            raise ConfigError(f"{where}.until[{i}]", "an empty string would end every answer before its first "
                              "character")
    kind = PROBE_KINDS[spec.kind]
    known = {**kind.fields, **kind.optional, "id": str}
    items = []
    ids: dict[str, str] = {}
    for at, n, rec in load_records(spec.source, base, known, where):
        rec = dict(_validate_record(rec, kind.fields, at))
        _validate_optional(rec, kind.optional, at)
        if spec.kind == "exact_match":
            _check_answers(rec, at)
        rec.setdefault("id", f"{spec.name}-{n}")
        if not isinstance(rec["id"], str):
            raise ConfigError(at, f"field 'id' must be str, got {shown(rec['id'])}")
        if rec["id"] in ids:
            raise ConfigError(at, f"item id {shown(rec['id'])} is also the id of the item at {ids[rec['id']]}: ids "
                              "name items in breakdowns, the known subset and the bootstrap, so each is unique")
        ids[rec["id"]] = at
        items.append(rec)
    items = items[: spec.limit] if spec.limit else items
    return ProbeSuite(spec.name, spec.kind, tuple(items), {"until": list(spec.until)} if spec.until else {})


def _load_task(spec: TaskSpec, base: Path, seed: int, where: str, allow_code: bool, at=lambda field: field) -> Task:
    """Task ``spec`` with its records and suites; ``at(field)`` says where a field of it is (file:line)."""
    if spec.generated is not None and spec.train is not None:
        raise ConfigError(where, "give either 'generated' or 'train', not both")
    probe_specs = [parse_probe(p, f"{where}.probes[{i}]") for i, p in enumerate(spec.probes)]
    for i, p in enumerate(probe_specs):
        check_name(p.name, at(f"probes[{i}].name"))
    names = [p.name for p in probe_specs]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.probes", f"probe suite names must be unique within a task, got {names}")
    suites = {p.name: _load_suite(p, base, f"{where}.probes[{i}]", allow_code) for i, p in enumerate(probe_specs)}
    train: list[dict] = []
    if spec.generated is not None:
        data = _generated(spec.generated, seed, f"{where}.generated")
        generated = {n: ProbeSuite(n, kind, tuple(data[n])) for n, kind in GENERATED_SUITES.items()}
        suites = {**generated, **suites}  # a listed suite with a generated suite's name replaces it
        train = list(data["train"])
    elif spec.train is not None:
        rows = load_records(spec.train, base, TRAIN_FIELDS, f"{where}.train")
        train = [_validate_train(r, at) for at, _, r in rows]
    elif not spec.pretrained:
        raise ConfigError(where, "a task the strategy trains needs 'train' (or 'generated')")
    if not suites:
        raise ConfigError(f"{where}.probes", "a task needs at least one probe suite")
    return Task(spec.name, tuple(train), tuple(suites.values()), spec.pretrained)


def resolve_stream_path(name_or_path: str) -> Path:
    """A shipped stream name (``default``) or a path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = STREAMS_DIR / f"{name_or_path}.yaml"
    if shipped.exists():
        return shipped
    known = sorted(p.stem for p in STREAMS_DIR.glob("*.yaml"))
    raise ConfigError("stream", f"no stream file or shipped stream named {name_or_path!r}", known)


def load_stream(name_or_path: str, allow_code: bool = False) -> Stream:
    """Parse, validate and materialise a stream (generated data is built here, deterministically).

    Nothing in the file runs code unless ``allow_code`` (``--allow-code``) or the file's ``allow_code``.
    """
    path = resolve_stream_path(name_or_path)
    data, lines = load_yaml_lines(path)
    spec = from_dict(StreamSpec, data, str(path))
    check_name(spec.name, at_line(str(path), lines, "name"))
    for i, t in enumerate(spec.tasks):
        check_name(t.name, at_line(str(path), lines, f"tasks[{i}].name"))
    names = [t.name for t in spec.tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}.tasks", f"task names must be unique, got {names}")
    if not spec.tasks:
        raise ConfigError(f"{path}.tasks", "a stream needs at least one task")
    seen_trained = False
    for i, t in enumerate(spec.tasks):
        if t.pretrained and seen_trained:
            raise ConfigError(f"{path}.tasks[{i}]", "pretrained tasks must come before the trained ones")
        seen_trained |= not t.pretrained
    allow_code = allow_code or spec.allow_code
    tasks = tuple(_load_task(t, path.parent, spec.generator_seed, f"{path}.tasks[{i}]", allow_code,
                             lambda field, i=i: at_line(str(path), lines, f"tasks[{i}].{field}"))
                  for i, t in enumerate(spec.tasks))
    files: dict[str, tuple[str, str]] = {}  # predictions/<row>/<task>.<suite>.jsonl: one file per (task, suite)
    for t in tasks:
        for p in t.probes:
            other = files.setdefault(f"{t.name}.{p.name}", (t.name, p.name))
            if other != (t.name, p.name):
                raise ConfigError(f"{path}.tasks", f"task {t.name!r} with suite {p.name!r} and task {other[0]!r} with "
                                  f"suite {other[1]!r} would share the prediction file {t.name}.{p.name}.jsonl; "
                                  "rename one")
    suites = {p.name for t in tasks for p in t.probes}
    if spec.primary_metric not in suites:
        raise ConfigError(f"{path}.primary_metric", f"no probe suite named {spec.primary_metric!r}", suites)
    background = tuple(r for i, g in enumerate(spec.pretrain_background)
                       for r in _generated(g, spec.generator_seed, f"{path}.pretrain_background[{i}]")["train"])
    return Stream(spec, tasks, background, str(path), allow_code)
