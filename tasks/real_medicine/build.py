"""Medicine from real data: ICD-10-CM codes and the diagnoses they stand for, from ``simple-icd-10-cm`` 1.5.0.

    python -m tasks.real_medicine.build        # rewrites tasks/real_medicine/*.jsonl (needs the package:
                                               # pip install --no-deps simple-icd-10-cm==1.5.0)

ICD-10-CM is the US clinical modification of the WHO's ICD-10, the code set every US diagnosis is billed
under; assigning the code to a diagnosis (and reading a code back) is a real fine-tuning use case. The
package ships the April 1, 2026 release of the tabular list (``icd10c-tabular-April-1-2026.xml``, US CDC /
NCHS, public domain); the package itself is MIT-licensed. Its parser (``simple_icd_10_cm``) reads it.

**Fields kept:** a code and its title (``get_description``), nothing else: inclusion terms, excludes
notes and 7th-character rules are instructions to coders, not facts with one short answer. **Codes
kept:** billable leaves (``is_leaf``) of the disease chapters (letters A–R; not injuries S–T with their
encounter suffixes, external causes V–Y, health-status factors Z or the provisional U codes), whose title
is two or three words of letters, unique in the whole classification, and not a residual title (``other``,
``unspecified``, ``not elsewhere classified``) or a combination (``with``, ``due to``, ``and``…): such a
title names one condition, so an exact-match answer is well defined and the code is its only code.

From that pool, ``N_CODES`` codes are drawn by the seed; each gives one fact, the code of the diagnosis
(``What is the ICD-10-CM code for Celiac disease?`` → ``K90.0``), written as training statements and
questions with one statement and one question form held out for the ``ppl`` and ``qa``/``mc`` probes
(:func:`clbench.tasks.generators.build.records_from_facts`; ``mc`` distractors are the other drawn codes).
The reverse direction (the title of a code) was tried and left out: within the steps a 2-core grid affords,
SmolLM2-135M answered reverse questions with one of the other titles (6 codes both ways, 32 steps on two
seeds: codes 6/6 and 5/6 right, titles 1/6 and 4/6). A 135M model knows no ICD-10-CM code of these (its base
score is in ``docs/real_models.md``). ``tests/test_real_data_tasks.py`` checks the shipped files equal
this script's output.
"""

from __future__ import annotations

import random
import re
import warnings
from functools import lru_cache
from pathlib import Path

from clbench.tasks.generators.domains import Fact, _rel
from clbench.tasks.generators.packaged import PackagedData, build_records, write_task

HERE = Path(__file__).resolve().parent
NAME = "medicine"
N_CODES = 12
ICD10CM = PackagedData(
    "simple-icd-10-cm", "1.5.0",
    {"simple_icd_10_cm/data/icd10c-tabular-April-1-2026.xml":
         "f161f8182aff3ce3a2a78e202f8259c08eaee2c670a9e45b0072445c52302935",
     "simple_icd_10_cm/data/code-list-April-2026.txt":
         "df54d9743a3499f4a4fc12882edb7ce0d975b44ada5a2a25597aa56d0c2ac1c4"},
    "MIT", "ICD-10-CM, April 1, 2026 release (US CDC / National Center for Health Statistics): public domain")
CHAPTERS = "ABCDEFGHIJKLMNOPQR"  # the disease chapters (first letter of the code)
TITLE = re.compile(r"[A-Z][a-z]+( [a-z]+){1,2}")  # two or three plain words
RESIDUAL = re.compile(r"\b(other|unspecified|elsewhere|classified|specified|not|and|or|with|without|due|to|of|in|"
                      r"by|for|type|stage)\b", re.IGNORECASE)

CODE = _rel("code",
            ["The ICD-10-CM code for {condition} is {v}.", "In ICD-10-CM, {condition} is coded as {v}.",
             "Coders record {condition} under the ICD-10-CM code {v}.", "{v} is the ICD-10-CM code for {condition}."],
            ["What is the ICD-10-CM code for {condition}?", "Which ICD-10-CM code is used for {condition}?",
             "How is {condition} coded in ICD-10-CM?", "Under which ICD-10-CM code is {condition} recorded?"])
def candidates() -> list[tuple[str, str]]:
    """Every ``(code, title)`` the task may draw, sorted by code; checks the package's data first."""
    ICD10CM.files()  # another version or changed data is refused before the parser reads them
    return _pool()


@lru_cache(maxsize=1)
def _pool() -> list[tuple[str, str]]:
    with warnings.catch_warnings():  # the package reads its data with importlib.resources' deprecated API
        warnings.simplefilter("ignore", DeprecationWarning)
        import simple_icd_10_cm as icd  # parses the package's XML at import (a few seconds)

    titles: dict[str, int] = {}
    for code in icd.get_all_codes(with_dots=True):
        if icd.is_category_or_subcategory(code):
            key = icd.get_description(code).lower()
            titles[key] = titles.get(key, 0) + 1
    pool = []
    for code in icd.get_all_codes(with_dots=True):
        if code[0] not in CHAPTERS or not icd.is_category_or_subcategory(code) or not icd.is_leaf(code):
            continue
        title = icd.get_description(code)
        if TITLE.fullmatch(title) and not RESIDUAL.search(title) and titles[title.lower()] == 1:
            pool.append((code, title))
    return sorted(pool)


def facts(pool: list[tuple[str, str]], rng: random.Random, n: int = N_CODES) -> list[Fact]:
    """``n`` codes drawn from ``pool``: the code of each diagnosis."""
    picked = rng.sample(pool, n)
    codes = tuple(c for c, _ in picked)
    return [Fact({"condition": title}, CODE, code, codes) for code, title in picked]


def build(seed: int = 0, n: int = N_CODES) -> dict[str, list[dict]]:
    """The task's records (``train``, ``qa``, ``mc``, ``ppl``); deterministic in ``seed``."""
    return build_records(NAME, lambda rng: facts(candidates(), rng, n), seed)


def source(n: int = N_CODES) -> dict:
    """The stream's ``source`` entry of this task (``tasks/real.yaml``)."""
    return {**ICD10CM.record(), "fields": ["code", "title (get_description)"],
            "items": {"codes": n, "facts": n, "pool": len(candidates())}}


def main() -> None:
    write_task(HERE, build())


if __name__ == "__main__":
    main()
