"""Find and run the code blocks of the README and the docs pages.

Conventions (also stated in docs/how-to/errors-and-development.md):
- a ```bash block is run with bash (``set -e``) and a ```python block with python, both from a scratch folder
  that mirrors the repository root (so ``examples/…`` and ``experiments/…`` resolve, and outputs land in the
  scratch folder); the blocks of one page run in order in the same folder;
- ``<!-- no-run -->`` on the line directly before a fence marks the block illustrative: it is not run;
- ``<!-- slow -->`` on the line directly before a fence: the block runs only in the slow suite (``-m slow``);
- a ```text block directly after a run block (blank lines between are fine) is the output the text quotes:
  each of its lines must appear in the block's output (stdout and stderr), in order, whitespace-collapsed;
  a line ``...`` stands for lines left out, ``...`` inside a line for any text (a path that differs by
  install), and every other line must be found.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[2]
RUN_LANGS = ("bash", "python")
_FENCE = re.compile(r"^(?P<indent> *)(?P<ticks>```+)\s*(?P<lang>[\w+-]*)")


@dataclass
class Block:
    page: str
    line: int                 # 1-based line of the opening fence
    lang: str
    code: str
    marker: Optional[str]     # "no-run", "slow" or None
    expected: Optional[str]   # the ```text block that follows, if any

    @property
    def runs(self) -> bool:
        return self.lang in RUN_LANGS and self.marker != "no-run"


def doc_pages() -> list[Path]:
    """README.md and every Markdown page under docs/."""
    return [REPO / "README.md", *sorted(p for p in (REPO / "docs").rglob("*.md") if "_hooks" not in p.parts)]


def parse_blocks(text: str, page: str = "") -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        ticks, lang, start = m.group("ticks"), m.group("lang").lower(), i
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(ticks):
            j += 1
        indent = len(m.group("indent"))
        code = "\n".join(line[indent:] for line in lines[i + 1 : j]) + "\n"
        prev = next((lines[k].strip() for k in range(start - 1, -1, -1) if lines[k].strip()), "") if start else ""
        marker = {"<!-- no-run -->": "no-run", "<!-- slow -->": "slow"}.get(prev)
        blocks.append(Block(page, start + 1, lang, code, marker, None))
        i = j + 1
    # attach each ```text block to the run block right before it
    for before, after in zip(blocks, blocks[1:]):
        if before.runs and after.lang == "text" and _only_blank_between(lines, before, after):
            before.expected = after.code
    return blocks


def _only_blank_between(lines: list[str], before: Block, after: Block) -> bool:
    close = before.line + before.code.count("\n")  # index of the closing fence (0-based) = opening + code lines
    return all(not line.strip() for line in lines[close + 1 : after.line - 1])


def missing_lines(expected: str, actual: str) -> list[str]:
    """Lines of ``expected`` not found, in order, in ``actual`` (whitespace-collapsed; ``...`` skipped)."""
    def norm(line: str) -> str:
        return " ".join(line.split())

    def matcher(line: str):
        if "..." not in line:
            return lambda text: text == line
        pattern = re.compile(".*".join(re.escape(part) for part in line.split("...")))
        return lambda text: pattern.fullmatch(text) is not None

    got = [norm(line) for line in actual.splitlines()]
    missing, pos = [], 0
    for line in (norm(x) for x in expected.splitlines()):
        if not line or line == "...":
            continue
        match = matcher(line)
        found = next((i for i in range(pos, len(got)) if match(got[i])), None)
        if found is None:
            missing.append(line)
        else:
            pos = found + 1
    return missing


def scratch_root(tmp: Path) -> Path:
    """A folder that looks like the repository root (top-level entries symlinked) where outputs are scratch."""
    root = tmp / "repo"
    root.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in (".git", "out", "site"):
            (root / entry.name).symlink_to(entry)
    shared = Path(os.environ.get("LLMSIM_SHARED_DIR", REPO.parent / "shared"))
    if shared.is_dir():  # commands that read the shared data name it ../shared, as from a clone beside it
        (tmp / "shared").symlink_to(shared)
    return root


def run_block(block: Block, cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MPLBACKEND"] = "Agg"
    env["LLMSIM_PROFILES_DIR"] = str(cwd.parent / "user_profiles")  # `profiles add-*` must not touch the user's
    env.pop("COLUMNS", None)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    if block.lang == "bash":
        argv = ["bash", "-e", "-c", block.code]  # no pipefail: `cmd | head` is a normal way to show the start
    else:
        argv = [sys.executable, "-c", block.code]
    return subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s)
