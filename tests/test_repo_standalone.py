"""The repository stands alone: nothing points at the team's private notes outside it, and the
README stays a five-minute quickstart (the rest lives in docs/)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|\b(?:HARDWARE|DESIGN|METHOD|ENVIRONMENT|RTDE)\.md\b|\bseed 00\d\b")


def _tracked_text_files() -> list[Path]:
    out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    paths = [ROOT / p for p in out.splitlines()]
    return [p for p in paths if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".cfg",
                                                            ".toml", ".xml", ""}]


def test_no_reference_outside_the_repository():
    hits = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{i}: {line.strip()[:120]}")
    assert not hits, "cite docs/ or a public source instead:\n" + "\n".join(hits)


def test_readme_is_a_quickstart():
    n = len((ROOT / "README.md").read_text().splitlines())
    assert n <= 150, f"README.md has {n} lines (at most 150; details go to docs/)"
