"""The known subset is cached under the base rows' key (``clbench.run.base_scores.cache_key``): the
checkpoint's files and the scoring version are part of it, so a base model rebuilt in the same folder, or
a changed scoring rule, decides the subset again instead of reusing a stale one."""

from __future__ import annotations

import json
import os
from contextlib import nullcontext

from clbench.config.experiment import load_config
from clbench.data.streams import load_stream
from clbench.results.files import RunFiles
from clbench.run import base_scores
from tests.test_probes import FixedAnswers

ANSWERS = ("Flim", "Dorn", "Vell")


def _setup(tmp_path):
    lines = "".join(json.dumps({"prompt": f"Q{i}:", "answer": a}) + "\n" for i, a in enumerate(ANSWERS))
    (tmp_path / "qa.jsonl").write_text(lines)
    (tmp_path / "s.yaml").write_text(
        "name: s\nknown_subset: true\ntasks:\n  - name: world\n    pretrained: true\n"
        "    probes: [{name: qa, kind: exact_match, path: qa.jsonl}]\n"
        "  - name: new\n    generated: {domain: notes, entities: 2}\n")
    stream = load_stream(str(tmp_path / "s.yaml"))
    base = tmp_path / "base-model"  # the same folder name before and after the rebuild
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"weights of the first build")
    cfg = load_config(None, [f"cache_dir={tmp_path / 'cache'}", f"model.path={base}"])
    return cfg, stream, base


def _known(tmp_path, run: str, cfg, stream, base, answers) -> dict:
    files = RunFiles(tmp_path / run)
    base_scores.ensure_known_subset(files, cfg, stream, base, lambda: nullcontext(FixedAnswers(answers)),
                                    progress=False)
    return json.loads((files.root / "eval" / "known_subset.json").read_text())["ids"]["world"]["qa"]


def test_the_subset_is_reused_for_the_same_checkpoint(tmp_path):
    cfg, stream, base = _setup(tmp_path)
    assert _known(tmp_path, "a", cfg, stream, base, ANSWERS) == ["qa-1", "qa-2", "qa-3"]
    # a second run of the same model takes the cached subset (these answers would give another)
    assert _known(tmp_path, "b", cfg, stream, base, ["x", "x", "x"]) == ["qa-1", "qa-2", "qa-3"]
    assert (tmp_path / "a/eval/known_subset.json").read_bytes() == (tmp_path / "b/eval/known_subset.json").read_bytes()
    assert [p.name.split("-")[0] for p in (tmp_path / "cache" / "rows").iterdir()] == ["known_subset"]


def test_a_model_rebuilt_in_the_same_folder_decides_the_subset_again(tmp_path):
    cfg, stream, base = _setup(tmp_path)
    assert _known(tmp_path, "a", cfg, stream, base, ANSWERS) == ["qa-1", "qa-2", "qa-3"]
    weights = base / "model.safetensors"
    weights.write_bytes(b"weights of the second build, retrained")
    os.utime(weights, ns=(weights.stat().st_atime_ns, weights.stat().st_mtime_ns + 10**9))
    assert _known(tmp_path, "b", cfg, stream, base, ["Flim", "x", "x"]) == ["qa-1"]


def test_a_new_scoring_version_decides_the_subset_again(tmp_path, monkeypatch):
    cfg, stream, base = _setup(tmp_path)
    assert _known(tmp_path, "a", cfg, stream, base, ANSWERS) == ["qa-1", "qa-2", "qa-3"]
    monkeypatch.setattr(base_scores, "SCORING_VERSION", base_scores.SCORING_VERSION + 1)
    assert _known(tmp_path, "b", cfg, stream, base, ["x", "Dorn", "x"]) == ["qa-2"]
