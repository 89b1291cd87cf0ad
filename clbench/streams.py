"""Streams: an ordered list of tasks, each with training records and probe suites, loaded from YAML.

A stream file (``tasks/*.yaml``)::

    name: general-medical-notes
    version: 1
    primary_metric: qa                  # the probe suite the headline numbers use
    tasks:
      - name: general
        pretrained: true                # learned by the base model, not by the strategy (row 0 = base)
        generated: {domain: general, entities: 40}
      - name: emails                    # a user task: JSONL files
        train: {path: data/emails_train.jsonl}
        probes:
          - {name: qa, kind: exact_match, path: data/emails_qa.jsonl}
          - {name: mc, kind: multiple_choice, path: data/emails_mc.jsonl}
          - {name: ppl, kind: perplexity, path: data/emails_heldout.jsonl}
    pretrain_background:                # embedded model only: extra pretraining text (language, not facts)
      - {domain: medical, entities: 16, seed: 1000}

Record shapes: training ``{"text"}`` or ``{"prompt","completion"}``; ``exact_match`` probes
``{"prompt","answer"}``; ``multiple_choice`` ``{"prompt","choices","label"}``; ``perplexity``
``{"text"}``. An ``id`` field is optional (the line number is used). Relative paths are relative to the
stream file. Errors name the file, the line and the field.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from clbench.config import load_yaml
from clbench.errors import ConfigError
from clbench.typed import from_dict, opt

PROBE_FIELDS = {
    "exact_match": {"prompt": str, "answer": str},
    "multiple_choice": {"prompt": str, "choices": list, "label": int},
    "perplexity": {"text": str},
}
GENERATED_SUITES = {"qa": "exact_match", "mc": "multiple_choice", "ppl": "perplexity"}
STREAMS_DIR = Path(__file__).resolve().parent.parent / "tasks"


@dataclass(frozen=True)
class GeneratedSpec:
    domain: str
    entities: int = 16
    seed: int | None = None  # None: the stream's generator_seed


@dataclass(frozen=True)
class SourceSpec:
    path: str


@dataclass(frozen=True)
class ProbeSpec:
    name: str
    kind: Literal["exact_match", "multiple_choice", "perplexity"]
    path: str


@dataclass(frozen=True)
class TaskSpec:
    name: str
    pretrained: bool = False
    generated: GeneratedSpec | None = None
    train: SourceSpec | None = None
    probes: tuple[ProbeSpec, ...] = ()


@dataclass(frozen=True)
class StreamSpec:
    name: str
    tasks: tuple[TaskSpec, ...]
    version: int = 1
    description: str = ""
    primary_metric: str = opt("qa", "probe suite behind the headline numbers")
    generator_seed: int = 0
    pretrain_background: tuple[GeneratedSpec, ...] = ()


@dataclass(frozen=True)
class ProbeSuite:
    name: str
    kind: str
    items: tuple[dict, ...]


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

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def suite_names(self) -> list[str]:
        """Every probe-suite name in the stream, in first-seen order (one accuracy matrix each)."""
        return list(dict.fromkeys(p.name for t in self.tasks for p in t.probes))

    def fingerprint(self) -> str:
        """A hash of every record: results and cached base models are keyed by it."""
        h = hashlib.sha256()
        for t in self.tasks:
            h.update(json.dumps([t.name, t.pretrained, t.train, [(p.name, p.kind, p.items) for p in t.probes]],
                                sort_keys=True).encode())
        h.update(json.dumps(self.background, sort_keys=True).encode())
        return h.hexdigest()[:16]


def _validate_record(rec: object, required: dict[str, type], where: str) -> dict:
    if not isinstance(rec, dict):
        raise ConfigError(where, f"expected a JSON object, got {type(rec).__name__}")
    for key, tp in required.items():
        if key not in rec:
            raise ConfigError(where, f"missing field {key!r}", list(required))
        if not isinstance(rec[key], tp) or (tp is int and isinstance(rec[key], bool)):
            raise ConfigError(where, f"field {key!r} must be {tp.__name__}, got {rec[key]!r}")
    if "choices" in required:
        if not all(isinstance(c, str) for c in rec["choices"]) or len(rec["choices"]) < 2:
            raise ConfigError(where, "field 'choices' must be a list of at least two strings")
        if not 0 <= rec["label"] < len(rec["choices"]):
            raise ConfigError(where, f"field 'label' is {rec['label']}, outside 0..{len(rec['choices']) - 1}")
    return rec


def _validate_train(rec: object, where: str) -> dict:
    if isinstance(rec, dict) and "text" in rec:
        return _validate_record(rec, {"text": str}, where)
    if isinstance(rec, dict) and "prompt" in rec:
        return _validate_record(rec, {"prompt": str, "completion": str}, where)
    raise ConfigError(where, "a training record needs 'text' or 'prompt'+'completion'", ["text", "prompt", "completion"])


def read_jsonl(path: Path) -> list[tuple[int, object]]:
    """``(line number, parsed object)`` for each non-blank line; malformed JSON → ``file:line``."""
    if not path.exists():
        raise ConfigError(str(path), "file not found")
    out = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append((n, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{path}:{n}", f"malformed JSON: {exc.msg}") from None
    if not out:
        raise ConfigError(str(path), "no records")
    return out


def _generated(spec: GeneratedSpec, default_seed: int, where: str) -> dict[str, list[dict]]:
    from tasks.generators.build import build_domain
    from tasks.generators.domains import DOMAINS

    if spec.domain not in DOMAINS:
        raise ConfigError(f"{where}.domain", f"unknown generated domain {spec.domain!r}", DOMAINS)
    return build_domain(spec.domain, spec.entities, default_seed if spec.seed is None else spec.seed)


def _load_task(spec: TaskSpec, base: Path, seed: int, where: str) -> Task:
    if spec.generated is not None:
        if spec.train is not None or spec.probes:
            raise ConfigError(where, "give either 'generated' or 'train'+'probes', not both")
        data = _generated(spec.generated, seed, f"{where}.generated")
        probes = tuple(ProbeSuite(name, kind, tuple(data[name])) for name, kind in GENERATED_SUITES.items())
        return Task(spec.name, tuple(data["train"]), probes, spec.pretrained)
    train: list[dict] = []
    if spec.train is not None:
        path = base / spec.train.path
        train = [_validate_train(r, f"{path}:{n}") for n, r in read_jsonl(path)]
    elif not spec.pretrained:
        raise ConfigError(where, "a task the strategy trains needs 'train' (or 'generated')")
    suites = []
    for i, p in enumerate(spec.probes):
        path = base / p.path
        items = []
        for n, rec in read_jsonl(path):
            rec = dict(_validate_record(rec, PROBE_FIELDS[p.kind], f"{path}:{n}"))
            rec.setdefault("id", f"{p.name}-{n}")
            items.append(rec)
        suites.append(ProbeSuite(p.name, p.kind, tuple(items)))
    if not suites:
        raise ConfigError(f"{where}.probes", "a task needs at least one probe suite")
    return Task(spec.name, tuple(train), tuple(suites), spec.pretrained)


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


def load_stream(name_or_path: str) -> Stream:
    """Parse, validate and materialise a stream (generated data is built here, deterministically)."""
    path = resolve_stream_path(name_or_path)
    spec = from_dict(StreamSpec, load_yaml(path), str(path))
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
    tasks = tuple(_load_task(t, path.parent, spec.generator_seed, f"{path}.tasks[{i}]")
                  for i, t in enumerate(spec.tasks))
    suites = {p.name for t in tasks for p in t.probes}
    if spec.primary_metric not in suites:
        raise ConfigError(f"{path}.primary_metric", f"no probe suite named {spec.primary_metric!r}", suites)
    background = tuple(r for i, g in enumerate(spec.pretrain_background)
                       for r in _generated(g, spec.generator_seed, f"{path}.pretrain_background[{i}]")["train"])
    return Stream(spec, tasks, background, str(path))
