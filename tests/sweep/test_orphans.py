"""A sweep's pool workers, forkserver and resource tracker exit when its main process is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_pool_workers_exit_when_the_sweep_is_killed(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("set: {workload.num_requests: 20000, engine.mode: reference}\nseeds: [1, 2, 3, 4]\n")
    main = subprocess.Popen([sys.executable, "-c", "import sys; from llmsim.cli import main; sys.exit(main())",
                             "sweep", str(spec), "-o", str(tmp_path / "out"), "-j", "2", "-q"],
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    helpers: set[int] = set()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and len(helpers) < 3:  # forkserver + 2 workers (+ resource tracker)
            time.sleep(0.3)
            helpers = descendants(main.pid)
        assert len(helpers) >= 3, "the sweep never started its pool"
        os.kill(main.pid, signal.SIGKILL)
        main.wait()
        deadline = time.time() + 15
        while time.time() < deadline and any(alive(p) for p in helpers):
            time.sleep(0.3)
        assert not [p for p in helpers if alive(p)], "pool processes outlived the killed sweep"
    finally:
        for pid in helpers | descendants(main.pid) | {main.pid}:  # whatever is left, if the test failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
