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
    NextTokenRequest,
    NextTokenResult,
    ScoreRequest,
    ScoreResult,
)
from audit.engines.fake import FakeEngine
from audit.engines.adapters import AdapterError, AdapterInfo, validate_adapter
from audit.engines.canary import CanaryResult, adapter_is_active
from audit.engines.factory import open_engine

__all__ = [
    "AdapterError",
    "AdapterInfo",
    "CanaryResult",
    "adapter_is_active",
    "open_engine",
    "validate_adapter",
    "Completion",
    "Engine",
    "EngineBase",
    "EngineError",
    "FakeEngine",
    "GenerateRequest",
    "GenerateResult",
    "LoraGate",
    "NextTokenRequest",
    "NextTokenResult",
    "ScoreRequest",
    "ScoreResult",
]
