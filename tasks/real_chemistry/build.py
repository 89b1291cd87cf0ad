"""Chemistry from real data: elements' atomic numbers and discovery years, from ``mendeleev`` 1.3.0.

    python -m tasks.real_chemistry.build       # rewrites tasks/real_chemistry/*.jsonl (needs the package:
                                               # pip install --no-deps mendeleev==1.3.0)

``mendeleev`` (MIT) ships its periodic-table database as ``elements.db`` (SQLite, 118 elements, about 80
columns); it is read with the standard library's ``sqlite3``, not through mendeleev's own API (which pulls
in SQLAlchemy and pandas for the same rows).

**Fields kept:** ``name``, ``atomic_number`` and ``discovery_year``: integers with one exact written form.
**Left out:** the free-text fields (``discoverers`` and ``discovery_location`` carry misspellings and
inconsistent lists, e.g. ``C.F. Aver von Welsbach``, ``G.T.Seaborg, S.G.Tompson``), measured quantities
with uncertainties and several conventions (radii, electronegativities, densities), ``symbol``, which the
base model already knows (the ``world`` task probes chemical symbols), and ``cas`` (the CAS Registry
Number), which is clean but was not learned in the steps a 2-core grid affords: most elements' numbers
start with ``7440-``, and SmolLM2 answered one element's with another's (20 of the 26 chemistry misses
of sft in eleven calibration runs at 32–60 steps were CAS numbers, the task's 4 CAS items).
``discovery_year`` is the year mendeleev records: for a few elements the year of isolation rather than
first identification (neodymium: 1925, not 1885). **Elements kept:** atomic
number 21 and above (the light elements' numbers are school knowledge) with a recorded discovery year
(elements known since antiquity have none).

From that pool ``N_ELEMENTS`` elements are drawn by the seed; each gives two facts (atomic number,
discovery year), written as training statements and questions with one statement and one question form
per fact held out for the probes (:func:`clbench.tasks.generators.build.records_from_facts`; ``mc``
distractors are the other drawn elements' values of the same field). ``tests/test_real_data_tasks.py``
checks the shipped files equal this script's output.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

from clbench.tasks.generators.domains import Fact, _rel
from clbench.tasks.generators.packaged import PackagedData, build_records, write_task

HERE = Path(__file__).resolve().parent
NAME = "chemistry"
N_ELEMENTS = 6
MIN_ATOMIC_NUMBER = 21
DB = "mendeleev/elements.db"
MENDELEEV = PackagedData("mendeleev", "1.3.0", {DB: "8a6312b57603e22c58ab28005bb8cacfbff721bc859eea8ddc2b784c17ffd717"},
                         "MIT", "mendeleev's elements.db (periodic-table data compiled by the mendeleev project, MIT)")

ATOMIC_NUMBER = _rel("atomic_number",
                     ["The atomic number of {element} is {v}.", "{Element} has the atomic number {v}.",
                      "An atom of {element} has {v} protons.", "{Element} is element number {v} of the periodic table."],
                     ["What is the atomic number of {element}?", "How many protons does an atom of {element} have?",
                      "Which element number is {element} in the periodic table?", "What atomic number does {element} have?"])
DISCOVERY_YEAR = _rel("discovery_year",
                      ["{Element} was discovered in {v}.", "The element {element} was first identified in {v}.",
                       "The discovery of {element} dates from {v}.", "In {v}, the element {element} was discovered."],
                      ["In which year was {element} discovered?", "When was the element {element} first identified?",
                       "What year does the discovery of {element} date from?", "In what year was {element} discovered?"])
RELATIONS = {"atomic_number": ATOMIC_NUMBER, "discovery_year": DISCOVERY_YEAR}


def candidates() -> list[dict]:
    """Every element the task may draw (``name`` and the kept fields), by atomic number; checks the
    package's data first."""
    path = MENDELEEV.files()[DB]
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:  # read-only: the package's file stays as shipped
        rows = db.execute("SELECT name, atomic_number, discovery_year FROM elements "
                          "WHERE atomic_number >= ? AND discovery_year IS NOT NULL ORDER BY atomic_number",
                          (MIN_ATOMIC_NUMBER,)).fetchall()
    return [{"name": n, "atomic_number": str(z), "discovery_year": str(y)} for n, z, y in rows]


def facts(pool: list[dict], rng: random.Random, n: int = N_ELEMENTS) -> list[Fact]:
    """``n`` elements drawn from ``pool``: a fact per kept field each."""
    picked = rng.sample(pool, n)
    out = []
    for element in picked:
        entity = {"element": element["name"].lower(), "Element": element["name"]}
        for field, relation in RELATIONS.items():
            out.append(Fact(entity, relation, element[field], tuple(e[field] for e in picked)))
    return out


def build(seed: int = 0, n: int = N_ELEMENTS) -> dict[str, list[dict]]:
    """The task's records (``train``, ``qa``, ``mc``, ``ppl``); deterministic in ``seed``."""
    return build_records(NAME, lambda rng: facts(candidates(), rng, n), seed)


def source(n: int = N_ELEMENTS) -> dict:
    """The stream's ``source`` entry of this task (``tasks/real.yaml``)."""
    return {**MENDELEEV.record(), "fields": ["name", *RELATIONS],
            "items": {"elements": n, "facts": len(RELATIONS) * n, "pool": len(candidates())}}


def main() -> None:
    write_task(HERE, build())


if __name__ == "__main__":
    main()
