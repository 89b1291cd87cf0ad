"""Write the local data of the shipped lm-eval tasks: the default stream's general world facts.

    python -m tasks.lm_eval.generate            # rewrites tasks/lm_eval/data/*.jsonl

The ``general`` task of ``tasks/default.yaml`` (facts the embedded base model learns in pretraining) is
materialised by clbench's own generator, and its three probe suites are written as JSONL that the task
YAML files next to this script read with ``dataset_path: json``. The files are shipped, so lm-eval needs
nothing at run time; ``tests/test_lm_eval_probes.py`` checks that they equal this script's output.
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
SOURCE_STREAM = "default"
SOURCE_TASK = "general"
FILES = {"qa": "general_qa.jsonl", "mc": "general_mc.jsonl", "ppl": "general_ppl.jsonl"}


def records() -> dict[str, list[dict]]:
    """``{file name: records}`` from the source stream's generated task (deterministic)."""
    from clbench.data.streams import load_stream

    task = next(t for t in load_stream(SOURCE_STREAM).tasks if t.name == SOURCE_TASK)
    suites = {s.name: s for s in task.probes}
    return {FILES[name]: [dict(item) for item in suites[name].items] for name in FILES}


def render(recs: list[dict]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in recs)


def main() -> None:
    DATA_DIR.mkdir(exist_ok=True)
    for name, recs in records().items():
        (DATA_DIR / name).write_text(render(recs), encoding="utf-8")
        print(f"wrote {len(recs)} records to {DATA_DIR / name}")


if __name__ == "__main__":
    main()
