"""The answer reading of a grid's base model (audit.reading's rule), measured once and cached.

Every grid of a profile, the localisation and the example subliminal student score the event this chose, so
their cached cells agree on it; a warm run only reads the stored measurement.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from audit.cache import ArtifactStore, content_key
from audit.pipeline.teachers import context_fingerprint
from audit.reading import AnswerReading

KIND = "answer-reading"


def base_reading(model, probes, context, declared: str = "auto", store_root: Path | None = None) -> AnswerReading:
    """The reading of `model` (a ModelRef) for `probes` in `context`, measured on the base with the HF engine."""
    def build(_out: Path) -> dict:
        from audit.engines import open_engine
        from audit.pipeline.executors import PIPELINE_THREADS, torch_threads
        from audit.scoring import measure_reading

        with torch_threads(PIPELINE_THREADS), open_engine("hf", model.path) as engine:
            return asdict(measure_reading(engine, probes, context, declared))

    store = ArtifactStore(store_root)
    key = content_key({"model": model.content_hash, "probes": probes, "context": context_fingerprint(context),
                       "declared": declared, "v": 1})
    store.get_or_build(KIND, key, build)
    return AnswerReading(**store.manifest(KIND, key)["result"])
