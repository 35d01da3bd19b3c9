"""Content-addressed artefact store: atomic, manifest-verified directories under one cache root.

Layout: ``<root>/<kind>/<key>/`` holds the artefact files plus ``manifest.json`` (sha256 of every file,
the caller's meta and the builder's returned dict). An entry exists only once its manifest is in place,
because the directory is assembled under a temporary name and renamed into place in one step.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from audit.errors import SubauditError

MANIFEST = "manifest.json"


class CacheError(SubauditError):
    """A cache operation failed; the message names the entry and the fix."""


def cache_root() -> Path:
    """The cache root: $SUBAUDIT_CACHE if set, else ~/.cache/subaudit."""
    env = os.environ.get("SUBAUDIT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "subaudit"


def _canonical(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _canonical(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return _canonical(obj.model_dump())
    return obj


def content_key(obj: Any) -> str:
    """First 16 hex digits of sha256 over the canonical JSON of ``obj`` (sorted keys, Paths as str)."""
    text = json.dumps(_canonical(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _file_hashes(directory: Path) -> dict[str, str]:
    return {
        p.relative_to(directory).as_posix(): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _check_name(kind: str, key: str) -> None:
    for part in (kind, key):
        if not part or "/" in part or part.startswith(".") or part.endswith(".corrupt"):
            raise CacheError(f"invalid cache kind/key {kind!r}/{key!r}: use plain names without '/' or leading '.'")


class ArtifactStore:
    """Finished artefacts by (kind, key); see the module docstring for the on-disk layout."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else cache_root()

    def path(self, kind: str, key: str) -> Path:
        """Where the entry (kind, key) lives once built (it may not exist)."""
        _check_name(kind, key)
        return self.root / kind / key

    def has(self, kind: str, key: str) -> bool:
        """Whether a finished entry is in place, without verifying its files (for estimates; use `get` to read it)."""
        return (self.path(kind, key) / MANIFEST).is_file()

    def get(self, kind: str, key: str) -> Path | None:
        """The verified entry directory, or None if absent; a corrupt entry is moved aside to ``*.corrupt``."""
        entry = self.path(kind, key)
        if not entry.is_dir():
            return None
        problem = self._verify(entry)
        if problem is None:
            return entry
        aside = entry.with_name(f"{key}.{int(time.time() * 1000)}.corrupt")
        os.replace(entry, aside)
        print(f"subaudit cache: {kind}/{key} is corrupt ({problem}); moved to {aside} and will rebuild",
              file=sys.stderr)
        return None

    def manifest(self, kind: str, key: str) -> dict:
        """The manifest of a finished entry; CacheError if there is none."""
        entry = self.path(kind, key)
        try:
            return json.loads((entry / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise CacheError(f"no valid manifest for cache entry {kind}/{key} at {entry}: build it first") from exc

    def build(self, kind: str, key: str, builder: Callable[[Path], dict | None], meta: dict | None = None) -> Path:
        """Run ``builder(tmpdir)``, write the manifest and rename the directory into place atomically."""
        entry = self.path(kind, key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        # The temp dir is a sibling so the final rename stays on one filesystem (atomic).
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", suffix=".tmp", dir=entry.parent))
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a finished entry is readable like any cache file
        try:
            result = builder(tmp)
            manifest = {
                "kind": kind,
                "key": key,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "files": _file_hashes(tmp),
                "meta": _canonical(meta or {}),
                "result": _canonical(result or {}),
            }
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
            if entry.exists():  # a concurrent builder won, or a stale entry: keep a verified one
                if self.get(kind, key) is not None:
                    shutil.rmtree(tmp)
                    return entry
            os.replace(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return entry

    def get_or_build(self, kind: str, key: str, builder: Callable[[Path], dict | None],
                     meta: dict | None = None) -> Path:
        """The verified entry if present, else build it (one builder at a time per entry, via a lock file)."""
        import fcntl

        found = self.get(kind, key)
        if found is not None:
            return found
        lock_path = self.path(kind, key).with_name(f".{key}.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # a concurrent process building the same entry: wait, then reuse
            found = self.get(kind, key)
            if found is not None:
                return found
            for stale in lock_path.parent.glob(f".{key}.*.tmp"):  # left by a killed builder (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            return self.build(kind, key, builder, meta)

    @staticmethod
    def _verify(entry: Path) -> str | None:
        try:
            recorded = json.loads((entry / MANIFEST).read_text())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return "missing or unreadable manifest"
        actual = _file_hashes(entry)
        if set(actual) != set(recorded):
            return f"file set differs from manifest ({sorted(set(actual) ^ set(recorded))[:3]})"
        bad = [name for name, digest in actual.items() if recorded[name] != digest]
        return f"sha256 mismatch in {bad[:3]}" if bad else None
