"""Engines: one interface (`Engine`) over vLLM, HF transformers+peft, and a scripted fake.

Heavy engines (HfEngine, VllmEngine) are imported lazily so `import audit.engines` stays fast.
"""

from audit.engines.base import (
    Completion,
    Engine,
    EngineBase,
    EngineError,
    GenerateRequest,
    GenerateResult,
    LoraGate,
    ScoreRequest,
    ScoreResult,
)
from audit.engines.fake import FakeEngine

__all__ = [
    "Completion",
    "Engine",
    "EngineBase",
    "EngineError",
    "FakeEngine",
    "GenerateRequest",
    "GenerateResult",
    "LoraGate",
    "ScoreRequest",
    "ScoreResult",
]
