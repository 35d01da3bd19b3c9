"""open_engine: pick an engine by name ("vllm" | "hf" | "fake")."""

from __future__ import annotations

from pathlib import Path

from audit.engines.base import Engine, EngineError

ENGINE_KINDS = ("vllm", "hf", "fake")


def open_engine(kind: str, model_path: str | Path | None = None, **kw) -> Engine:
    """Open an engine; keyword arguments go to its constructor. Close it (or use `with`)."""
    if kind == "fake":
        from audit.engines.fake import FakeEngine

        return FakeEngine(**kw)
    if kind not in ENGINE_KINDS:
        raise EngineError(f"unknown engine {kind!r}; choose one of {', '.join(ENGINE_KINDS)}")
    if model_path is None:
        raise EngineError(f"engine {kind!r} needs a model path")
    if kind == "hf":
        from audit.engines.hf import HfEngine

        return HfEngine(model_path, **kw)
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise EngineError("vLLM is not installed; install the [cpu] or [gpu] extra or use --engine hf")
    from audit.engines.vllm import VllmEngine

    return VllmEngine(model_path, **kw)
