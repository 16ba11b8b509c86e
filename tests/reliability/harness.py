"""Run one bad-input case through ``llmsim.cli.main`` in this process and describe what happened.

In-process (no subprocess per case) keeps ~250 cases to a few seconds; a SIGALRM watchdog turns a hang
into a failure instead of a stuck test run.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path

from tests.reliability.corpus import Case


class Hung(Exception):
    pass


@dataclass
class Outcome:
    rc: int | None
    stdout: str
    stderr: str
    crash: str | None  # the traceback of an exception that escaped main()
    new_files: list[str]

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def _snapshot(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def write_files(case: Case, folder: Path) -> None:
    for name, content in case.files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")


def run_case(case: Case, folder: Path, timeout_s: int = 20) -> Outcome:
    """Write the case's files into ``folder``, run it with ``folder`` as working directory, report."""
    from llmsim.cli import main

    folder.mkdir(parents=True, exist_ok=True)
    write_files(case, folder)
    before = _snapshot(folder)
    argv = [a.replace("{d}", str(folder)) for a in case.argv]
    out, err = io.StringIO(), io.StringIO()
    rc, crash = None, None

    def alarm(signum, frame):
        raise Hung(f"no answer within {timeout_s} s")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    old_cwd = os.getcwd()
    signal.alarm(timeout_s)
    try:
        os.chdir(folder)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(argv)
    except BaseException:  # noqa: BLE001 - a crash or a hang is what the test reports
        crash = traceback.format_exc()
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_handler)
        os.chdir(old_cwd)
    new = sorted(_snapshot(folder) - before)
    return Outcome(rc, out.getvalue(), err.getvalue(), crash, new)


def problems(case: Case, outcome: Outcome) -> list[str]:
    """Every way the outcome breaks the promise (empty list: the case was refused cleanly)."""
    found = []
    if outcome.crash is not None:
        last = outcome.crash.strip().splitlines()[-1]
        found.append(f"crashed: {last}")
        return found
    if outcome.rc in (0, None):
        found.append(f"exit status {outcome.rc} (expected non-zero)")
    if "Traceback" in outcome.stderr or "Traceback" in outcome.stdout:
        found.append("printed a traceback")
    lines = outcome.error_lines
    if len(lines) != 1:
        found.append(f"{len(lines)} lines on stderr (expected one): {lines[:4]}")
    elif not lines[0].startswith("error:"):
        found.append(f"stderr does not start with 'error:': {lines[0]!r}")
    text = " ".join(lines).lower()
    for needle in case.expect:
        if needle.lower() not in text:
            found.append(f"message does not name {needle!r}: {lines[:2]}")
    if outcome.new_files:
        found.append(f"left files behind: {outcome.new_files[:5]}")
    return found
