"""Real data read from files that PyPI packages ship, pinned to the exact files a generator was written for.

The real-data tasks (``tasks/real_medicine``, ``tasks/real_chemistry``) are built from data files inside
installed wheels (ICD-10-CM in ``simple-icd-10-cm``, the periodic table in ``mendeleev``): nothing is
downloaded, and the generated files are shipped, so a run needs none of these packages — only rebuilding
the files (``python -m tasks.real_medicine.build``) and the tests that compare them with the generator do.

A generator names its data as :class:`PackagedData`: the distribution, its version, the files it reads
and their SHA-256. :meth:`PackagedData.files` refuses anything else — a missing package, another version,
a file whose bytes differ — with a ``ClbenchError`` naming the package, the version and the one ``pip
install`` line that gives the data the generator was written for. Facts chosen from changed data would
silently be other facts.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from clbench.errors import ClbenchError
from clbench.tasks.generators.build import records_from_facts
from clbench.tasks.generators.domains import Fact


@dataclass(frozen=True)
class PackagedData:
    package: str  # PyPI distribution name
    version: str  # the version the generator was written for
    sha256: dict[str, str]  # file path inside the distribution (as in its RECORD) -> SHA-256
    licence: str  # the package's licence
    data_licence: str  # the data's own terms and origin

    @property
    def install_command(self) -> str:
        # --no-deps: the generators read the data files, not the packages' code (mendeleev would pull
        # in SQLAlchemy, pandas and more for its own API)
        return f"pip install --no-deps {self.package}=={self.version}"

    def files(self) -> dict[str, Path]:
        """The pinned files of the installed package, checked byte for byte (SHA-256)."""
        try:
            dist = distribution(self.package)
        except PackageNotFoundError:
            raise ClbenchError(f"the package {self.package} {self.version} is not installed; the generator reads "
                               f"its data files: {self.install_command}") from None
        if dist.version != self.version:
            raise ClbenchError(f"{self.package} {dist.version} is installed, but the generator was written for "
                               f"{self.package} {self.version} (its facts are chosen from that version's data): "
                               f"{self.install_command}")
        out = {}
        for rel, expected in self.sha256.items():
            path = Path(dist.locate_file(rel))
            if not path.is_file():
                raise ClbenchError(f"{self.package} {dist.version} lacks {rel}: {self.install_command}")
            got = sha256_of(path)
            if got != expected:
                raise ClbenchError(f"{self.package} {dist.version}: {rel} has SHA-256 {got[:16]}…, not the "
                                   f"{expected[:16]}… the generator was written for; reinstall: {self.install_command}")
            out[rel] = path
        return out

    def record(self) -> dict:
        """Where the data come from, as the stream file and each run's ``provenance.json`` record it."""
        return {"package": self.package, "version": self.version, "licence": self.licence, "data": self.data_licence}


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def build_records(name: str, draw: Callable[[random.Random], list[Fact]], seed: int) -> dict[str, list[dict]]:
    """A real-data task's records (``train``, ``qa``, ``mc``, ``ppl``) from the facts ``draw`` picks with a
    generator seeded by ``(name, seed)``; deterministic in ``seed``, checked by :func:`check_scorable`."""
    rng = random.Random(f"clbench:real_{name}:{seed}")
    records = records_from_facts(draw(rng), rng, name)
    check_scorable(records, f"tasks/real_{name}")
    return records


def check_scorable(records: dict[str, list[dict]], where: str) -> None:
    """Refuse probe items a scorer cannot score fairly: an empty answer, an exact-match answer that is
    part of its own prompt (copying the prompt would score), a choice list without its answer or with a
    repeated choice."""
    for item in records["qa"]:
        answer = item["answer"].strip()
        if not answer or answer.lower() in item["prompt"].lower():
            raise ClbenchError(f"{where}: qa item {item['id']}: the answer {item['answer']!r} is empty or part "
                               f"of its own prompt {item['prompt']!r}")
    for item in records["mc"]:
        choices = item["choices"]
        if len(set(choices)) != len(choices) or not 0 <= item["label"] < len(choices):
            raise ClbenchError(f"{where}: mc item {item['id']}: repeated choices or a label outside them: {choices}")
    for item in records["ppl"]:
        if not item["text"].strip():
            raise ClbenchError(f"{where}: ppl item {item['id']} has no text")


TASK_FILES = ("train", "qa", "mc", "ppl")


def render(records: list[dict]) -> str:
    """JSONL text: one record a line, keys sorted (the shipped files are compared byte for byte)."""
    return "".join(json.dumps(r, sort_keys=True, ensure_ascii=False) + "\n" for r in records)


def write_task(folder: Path, records: dict[str, list[dict]]) -> None:
    """``train.jsonl``, ``qa.jsonl``, ``mc.jsonl`` and ``ppl.jsonl`` of a real-data task into ``folder``."""
    for name in TASK_FILES:
        (folder / f"{name}.jsonl").write_text(render(records[name]), encoding="utf-8")
        print(f"wrote {len(records[name])} records to {folder / f'{name}.jsonl'}")
