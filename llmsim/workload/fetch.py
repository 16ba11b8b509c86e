"""``llmsim trace fetch burstgpt``: download an official BurstGPT release file and check its sha256.

The URLs are the GitHub release assets of HPMLL/BurstGPT (release v1.1 holds releases 1 and 2 of the
trace); the sha256 values are those of the Git-LFS pointers in HPMLL/BurstGPT's history (commit 2a2c8509),
recorded in ../shared/traces/burstgpt/SOURCE.md. Release 3 (BurstGPT_3.csv, with Session ID and Elapsed
time) has no published hash there: it is downloaded but reported as unverified.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from llmsim.errors import UserError

BASE_URL = "https://github.com/HPMLL/BurstGPT/releases/download"


@dataclass(frozen=True)
class ReleaseFile:
    name: str
    url: str
    sha256: Optional[str]
    size_bytes: Optional[int]


BURSTGPT_FILES: dict[str, ReleaseFile] = {
    "1": ReleaseFile("BurstGPT_1.csv", f"{BASE_URL}/v1.1/BurstGPT_1.csv",
                     "4bb3783693d0a435686fbfc885615d2349bd067239079fa4b749f2e679e12122", 52_283_111),
    "1-without-fails": ReleaseFile("BurstGPT_without_fails_1.csv", f"{BASE_URL}/v1.1/BurstGPT_without_fails_1.csv",
                                   "a4d068a7113ec0290e74063a1b3447dc6001a30e4298eb313581b71006dda1f4", 51_429_517),
    "2": ReleaseFile("BurstGPT_2.csv", f"{BASE_URL}/v1.1/BurstGPT_2.csv",
                     "44bf5942b03fca42c01a226a545ad3a750ec62688faecd67b6831c56a8928bf7", 144_819_209),
    "2-without-fails": ReleaseFile("BurstGPT_without_fails_2.csv", f"{BASE_URL}/v1.1/BurstGPT_without_fails_2.csv",
                                   "56193aa9b2bb26128ded43d2d29a960df6bf5af062bcfc9b005f3fcaa4e6e501", 142_376_815),
    "3": ReleaseFile("BurstGPT_3.csv", f"{BASE_URL}/v1.2/BurstGPT_3.csv", None, None),
}


def default_trace_dir() -> Path:
    return Path(os.environ.get("LLMSIM_TRACE_DIR", Path.home() / ".cache" / "llmsim" / "traces")) / "burstgpt"


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_burstgpt(release: str = "1", dest_dir: Optional[Path] = None, *, timeout_s: float = 30.0,
                   progress: Optional[Callable[[int, Optional[int]], None]] = None,
                   opener: Callable = urllib.request.urlopen) -> Path:
    """Download one release file into ``dest_dir`` (default ~/.cache/llmsim/traces/burstgpt) and verify it.

    A file already there with the right hash is not downloaded again. Without network, raises a
    :class:`UserError` whose one line says where to put a manually downloaded copy.
    """
    if release not in BURSTGPT_FILES:
        raise UserError(f"unknown BurstGPT release {release!r}; valid: {', '.join(BURSTGPT_FILES)}")
    spec = BURSTGPT_FILES[release]
    dest_dir = Path(dest_dir or default_trace_dir())
    target = dest_dir / spec.name
    if target.exists() and spec.sha256 and sha256_of(target) == spec.sha256:
        return target
    dest_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + ".part")
    digest = hashlib.sha256()
    try:
        with opener(spec.url, timeout=timeout_s) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or spec.size_bytes
            done = 0
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress(done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise UserError(f"cannot download {spec.url} ({reason}); download it by hand and put it at {target}"
                        + (f" (sha256 {spec.sha256})" if spec.sha256 else "")) from None
    if spec.sha256 and digest.hexdigest() != spec.sha256:
        partial.unlink(missing_ok=True)
        raise UserError(f"{spec.url}: sha256 {digest.hexdigest()} does not match the published {spec.sha256}; "
                        "file discarded")
    if not spec.sha256:
        warnings.warn(f"{spec.name}: no published sha256 to check against (sha256 {digest.hexdigest()})", stacklevel=2)
    partial.replace(target)
    return target
