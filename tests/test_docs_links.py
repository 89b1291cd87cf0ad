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


MAKEFILE_TARGETS = set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.MULTILINE))
# `make bench`, (make perf), ": make install-real)", "$ make test -j2": a command, not the verb in prose
MAKE_COMMAND = re.compile(r"(?:`|\$ |\(|: )make ([a-z][\w-]*)(?=[`)'\"]|$| -)", re.MULTILINE)


def test_every_make_target_named_anywhere_is_in_the_makefile():
    """clbench perf once sent the reader to a `real-model` make target that never existed."""
    named = {(src, m) for src in SOURCES if src.is_file() and not src.is_symlink()
             for m in MAKE_COMMAND.findall(src.read_text(errors="replace"))}
    assert len({m for _, m in named}) >= 15  # the pattern finds the commands (README alone names a dozen)
    missing = sorted(f"{src.relative_to(ROOT)}: make {m}" for src, m in named if m not in MAKEFILE_TARGETS)
    assert missing == []
