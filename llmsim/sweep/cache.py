"""The run-result cache: one small JSON file per run, named by the hash of the run's full config.

A sweep writes each run's result here the moment the run finishes, atomically (a temporary file renamed
into place), so a sweep that is killed loses at most the runs in flight: rerunning it finds every finished
run here and runs only the missing ones. Because the name is the hash of the *resolved* config, a cached
result is reused only for exactly the same run, whichever spec or executor asks for it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Optional

from llmsim.fileio import atomic_write_text


def json_safe(value: Any) -> Any:
    """NaN and ±inf become None so every cached file is strict JSON (and reloads to the same values)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalars
        return json_safe(value.item())
    return value


class ResultCache:
    """``<dir>/<key>.json`` per run: ``{"key", "status": "ok"|"failed", "metrics", "error", "wall_run_s"}``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def path_for(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def load(self, key: str) -> Optional[dict[str, Any]]:
        """The cached record, or None when absent or unreadable (an unreadable file is simply redone)."""
        path = self.path_for(key)
        try:
            record = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
            return None
        if not isinstance(record, dict) or record.get("key") != key:
            return None
        return record

    def store(self, record: dict[str, Any]) -> dict[str, Any]:
        """Write atomically; returns the record as it reads back (so callers see exactly the cached values)."""
        text = json.dumps(json_safe(record), sort_keys=True, allow_nan=False)
        atomic_write_text(self.path_for(record["key"]), text + "\n")
        return json.loads(text)

    def keys(self) -> set[str]:
        if not self.directory.exists():
            return set()
        return {p.stem for p in self.directory.glob("*.json")}
