"""User data files → clbench records: JSONL, CSV, Parquet, or a ``datasets`` ``save_to_disk`` folder.

A source in a stream file names a local file and, optionally, how its columns map to clbench's fields::

    train: {path: data/train.csv, fields: {prompt: question, completion: answer}}
    probes:
      - {name: mc, kind: multiple_choice, path: data/mc.parquet, fields: {choices: [A, B, C, D], label: gold}}
      - {name: qa, kind: exact_match, path: data/qa_saved, split: test}      # a save_to_disk folder

``format`` is taken from the path (``.csv``, ``.parquet``/``.pq``, a directory = ``disk``, anything else =
``jsonl``) unless given. ``fields`` maps a clbench field to a source column (``choices`` may also take a
list of columns, one choice each); with ``fields``, a record holds exactly the fields its kind knows,
each taken from its mapped column or, unmapped, from the column of the same name. Without ``fields`` a
row is used as it is (the JSONL behaviour clbench always had).

Every record comes with ``where``, used in every error about it: ``file:line`` for JSONL and CSV (the
physical line the record starts on), ``file row N`` for Parquet and saved datasets (N counts from 1).

Files are read as UTF-8 (a byte that is not names its line and column), and one record may hold at
most :data:`MAX_RECORD_BYTES`: a longer line is an error naming it, read no further than the limit,
so bad data cannot take unbounded memory.
"""

from __future__ import annotations

import contextlib
import csv
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from clbench.config.options import opt
from clbench.errors import ConfigError, did_you_mean

FORMATS = ("jsonl", "csv", "parquet", "disk")
MAX_RECORD_BYTES = 64 * 2**20  # one JSONL line, CSV line or Parquet row


@dataclass(frozen=True)
class SourceSpec:
    """Where a task's training records or a probe suite's items come from."""

    path: str
    format: Literal["auto", "jsonl", "csv", "parquet", "disk"] = opt("auto", "file format; auto = from path")
    fields: dict = field(default_factory=dict)  # clbench field -> source column (list of columns for choices)
    split: str | None = opt(None, "split of a saved DatasetDict (format disk)")


def detect_format(path: Path) -> str:
    if path.is_dir():
        return "disk"
    suffix = path.suffix.lower()
    return {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "jsonl")


def check_fields(fields: dict, allowed: list[str], where: str) -> None:
    """Reject a mapping to a field the record kind does not have, or a column that is not a name."""
    for dst, src in fields.items():
        if dst not in allowed:
            raise ConfigError(f"{where}.fields", f"unknown field {dst!r}{did_you_mean(dst, allowed)}",
                              allowed)
        ok = isinstance(src, str) or (dst == "choices" and isinstance(src, list)
                                      and src and all(isinstance(c, str) for c in src))
        if not ok:
            what = "a column name" + (" or a list of them" if dst == "choices" else "")
            raise ConfigError(f"{where}.fields.{dst}", f"expected {what}, got {src!r}")


def _too_long(where: str) -> ConfigError:
    return ConfigError(where, f"record longer than {MAX_RECORD_BYTES // 2**20} MiB (the per-record limit, "
                       "clbench.sources.MAX_RECORD_BYTES); split it into several records")


def decode_line(raw: bytes, where: str) -> str:
    """``raw`` as UTF-8 text; an undecodable byte names the line and column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(where, f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1} "
                          "(save the file as UTF-8)") from None


def text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of each line, decoded one at a time and none longer than the limit."""
    with open(path, "rb") as fh:
        for n in itertools.count(1):
            raw = fh.readline(MAX_RECORD_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_RECORD_BYTES:
                raise _too_long(f"{path}:{n}")
            yield n, decode_line(raw, f"{path}:{n}")


def read_jsonl(path: Path) -> list[tuple[str, int, object]]:
    """``(file:line, line, parsed object)`` for each non-blank line; malformed JSON → ``file:line``."""
    out = []
    for n, line in text_lines(path):
        if line.strip():
            try:
                out.append((f"{path}:{n}", n, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}", f"malformed JSON: {exc.msg}") from None
    return out


def read_csv(path: Path) -> list[tuple[str, int, dict]]:
    """``(file:line, line, row)`` with every cell as text.

    The standard ``csv`` module rather than pandas or ``datasets`` (both pandas underneath): it keeps every
    cell as written (no ``"007"`` → 7, no empty cell → NaN), tells a missing cell from an empty one, and
    gives the physical line of each record, so an error names the line a user sees in an editor.
    """
    out = []
    limit = csv.field_size_limit(MAX_RECORD_BYTES)  # the module's default, 128 KiB a cell, is a bare error
    lines = (text for _, text in text_lines(path))
    try:
        reader = csv.reader(lines, strict=True)
        try:
            header = next(reader, None)
            if header is None:
                return []
            start = reader.line_num + 1
            for cells in reader:
                line, where = start, f"{path}:{start}"
                start = reader.line_num + 1
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise ConfigError(where, f"malformed CSV row: {len(cells)} cells, the header has "
                                      f"{len(header)}", header)
                out.append((where, line, dict(zip(header, cells))))
        except csv.Error as exc:
            raise ConfigError(f"{path}:{reader.line_num}", f"malformed CSV: {exc}") from None
    finally:
        csv.field_size_limit(limit)
    return out


@contextlib.contextmanager
def quiet_datasets():
    """``datasets`` draws progress bars for tiny local files; switch them off here and restore the setting."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def read_arrow(path: Path, fmt: str, split: str | None, where: str) -> list[tuple[str, int, dict]]:
    """``(file row N, N, row)`` from Parquet (``datasets``' parquet builder) or a ``save_to_disk`` folder."""
    import datasets

    with quiet_datasets():
        try:
            if fmt == "parquet":
                ds = datasets.load_dataset("parquet", data_files=str(path), split="train")
            else:
                ds = datasets.load_from_disk(str(path))
        except FileNotFoundError as exc:
            what = "Parquet file" if fmt == "parquet" else "saved dataset"
            raise ConfigError(str(path), f"not a {what}: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - pyarrow/datasets raise many types for a corrupt file
            raise ConfigError(str(path), f"cannot read as {fmt}: {type(exc).__name__}: {exc}") from None
    if isinstance(ds, datasets.DatasetDict):
        if split is None or split not in ds:
            raise ConfigError(f"{where}.split", f"{path} holds several splits; name one" if split is None
                              else f"no split {split!r} in {path}", list(ds))
        ds = ds[split]
    elif split is not None:
        raise ConfigError(f"{where}.split", f"{path} is a single dataset without splits; remove 'split'")
    rows = []
    for i, row in enumerate(ds.to_list(), 1):
        if sum(len(v) for v in row.values() if isinstance(v, (str, bytes))) > MAX_RECORD_BYTES:
            raise _too_long(f"{path} row {i}")
        rows.append((f"{path} row {i}", i, row))
    return rows


def read_rows(spec: SourceSpec, base: Path, where: str) -> list[tuple[str, int, object]]:
    """Raw rows of a source: ``(where, line or row number, row)``; ``where`` is what an error names."""
    path = base / spec.path
    if not path.exists():
        raise ConfigError(str(path), "file not found")
    fmt = detect_format(path) if spec.format == "auto" else spec.format
    if fmt == "disk" and not path.is_dir():
        raise ConfigError(f"{where}.format", f"format 'disk' needs a save_to_disk folder, {path} is a file")
    if fmt != "disk" and path.is_dir():
        raise ConfigError(f"{where}.format", f"{path} is a folder; format 'disk' reads save_to_disk folders")
    if fmt != "disk" and spec.split is not None:
        raise ConfigError(f"{where}.split", "'split' applies only to a saved DatasetDict (format disk)")
    if fmt == "jsonl":
        rows = read_jsonl(path)
    elif fmt == "csv":
        rows = read_csv(path)
    else:
        rows = read_arrow(path, fmt, spec.split, where)
    if not rows:
        raise ConfigError(str(path), "no records")
    return rows


def _coerce(value: Any, tp: type, fmt: str) -> Any:
    """CSV cells are text: a field clbench needs as an int or a list is parsed (``"2"``, ``'["a", "b"]'``)."""
    if fmt != "csv" or not isinstance(value, str):
        return value
    if tp is int and value.strip().lstrip("-").isdigit():
        return int(value)
    if tp is list:
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(value)
    return value


def map_record(row: object, fields: dict, known: dict[str, type], where: str, fmt: str) -> object:
    """One clbench record from a raw row: mapped columns renamed, CSV text parsed where a field needs it.

    ``known`` is every field the record kind has (required and optional) with its type.
    """
    if not isinstance(row, dict):
        return row  # the record validator names the problem
    if not fields:
        return {k: _coerce(v, known.get(k, str), fmt) for k, v in row.items()}
    rec = {}
    for name, tp in known.items():
        src = fields.get(name, name)
        if isinstance(src, list):
            missing = [c for c in src if c not in row]
            if missing:
                raise ConfigError(where, f"missing field {missing[0]!r} (mapped to {name!r})", list(row))
            rec[name] = [row[c] for c in src]
        elif src in row:
            rec[name] = _coerce(row[src], tp, fmt)
        elif name in fields:
            raise ConfigError(where, f"missing field {src!r} (mapped to {name!r})", list(row))
    return rec


def load_records(spec: SourceSpec, base: Path, known: dict[str, type], where: str) -> list[tuple[str, int, object]]:
    """``(where, line or row number, record)`` per row, fields mapped (validation is the caller's)."""
    check_fields(spec.fields, list(known), where)
    fmt = detect_format(base / spec.path) if spec.format == "auto" else spec.format
    return [(w, n, map_record(row, spec.fields, known, w, fmt)) for w, n, row in read_rows(spec, base, where)]
