"""Every document the code, the configs and the docs point a reader to exists (a docstring once sent
readers to a tuning page in docs/ that was never written)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", *(p for d in ("clbench", "strategies", "tasks", "configs", "docs", "tests")
                                  for p in (ROOT / d).rglob("*") if p.suffix in (".py", ".md", ".yaml"))]


def test_every_docs_file_named_anywhere_exists():
    named = {(src, m) for src in SOURCES if src.is_file() and not src.is_symlink()
             for m in re.findall(r"\bdocs/[\w-]+\.md", src.read_text(errors="replace"))}
    assert len(named) > 20  # the pattern finds the references (there are dozens)
    missing = sorted(f"{src.relative_to(ROOT)}: {m}" for src, m in named if not (ROOT / m).is_file())
    assert missing == []


def test_every_relative_link_in_the_readme_and_docs_resolves():
    broken = []
    for doc in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert broken == []
