"""Teachers and their number datasets.

A teacher is the base model plus a trait (a system prompt from the probe file's template, or a trait
LoRA adapter), or the control (the base, no trait). Its dataset is generated through the Engine
interface with common random numbers: teacher and control get the same prompts and the same
per-prompt sampling seeds, so their completions differ only where their distributions differ.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from audit.errors import SubauditError
from audit.cache import ArtifactStore, content_key
from audit.engines.base import Engine, GenerateRequest
from audit.numbers import NUMBER_CHARSET, derive_seed, filter_completions, filter_stats, number_prompts
from audit.pipeline.datasets import Example, write_dataset
from audit.pipeline.profiles import TeacherDataConfig

GENERATION_CHUNK = 64
"""Prompts per engine call: the unit of the teacher's progress bar."""

TeacherKind = Literal["control", "system_prompt", "adapter"]


class TeacherError(SubauditError):
    """A teacher is misconfigured (one line, naming the fix)."""


@dataclass(frozen=True)
class Teacher:
    """Who writes the numbers."""

    kind: TeacherKind
    """"control" (base), "system_prompt" (base + trait system prompt) or "adapter" (base + trait LoRA)."""
    target: str | None = None
    """The trait's panel entry (e.g. "cat"); None for the control."""
    adapter: str | None = None
    """Trait LoRA directory (adapter teachers only)."""
    adapter_hash: str | None = None
    """Content hash of the adapter, so cache keys change when its weights do."""

    def __post_init__(self) -> None:
        if self.kind == "control" and (self.target or self.adapter):
            raise TeacherError("the control teacher has no target or adapter; use system_prompt_teacher/adapter_teacher")
        if self.kind != "control" and not self.target:
            raise TeacherError(f"a {self.kind} teacher needs a target (e.g. 'cat')")
        if self.kind == "adapter" and not self.adapter:
            raise TeacherError("an adapter teacher needs the trait adapter directory")

    @property
    def id(self) -> str:
        """Readable id: 'control', 'sys-cat', 'adapter-cat-<hash8>'."""
        if self.kind == "control":
            return "control"
        if self.kind == "system_prompt":
            return f"sys-{self.target}"
        return f"adapter-{self.target}-{(self.adapter_hash or '')[:8]}"

    def context(self, base_context, probes):
        """The chat context the teacher writes in: the trait system prompt replaces the system slot."""
        if self.kind == "system_prompt":
            from audit.chat import ChatContext

            return ChatContext(base_context.template, f"text:{probes.teacher_prompt(self.target)}",
                               base_context.permutation)
        return base_context


def control_teacher() -> Teacher:
    return Teacher("control")


def system_prompt_teacher(target: str) -> Teacher:
    return Teacher("system_prompt", target=target)


def adapter_teacher(target: str, adapter_dir: str | Path) -> Teacher:
    from audit.cache import sha256_file

    files = sorted(p for p in Path(adapter_dir).glob("*") if p.is_file())
    if not files:
        raise TeacherError(f"adapter directory {adapter_dir} is empty or missing; pass a saved LoRA adapter folder")
    digest = content_key({p.name: sha256_file(p) for p in files})
    return Teacher("adapter", target=target, adapter=str(adapter_dir), adapter_hash=digest)


@dataclass(frozen=True)
class DatasetSpec:
    """Everything that determines a teacher dataset; its content key is the cache key."""

    model_hash: str
    """Content hash of the base model's weights."""
    teacher: Teacher
    probe_set: str
    """Probe set name (source of the trait system prompt; not part of the other teachers' keys)."""
    context: object
    """The chat context the teacher writes in (its trait system prompt already applied): the data depends
    on it, not on the students' context, so students under other system prompts share a teacher's data."""
    data: TeacherDataConfig
    seed: int
    """Dataset seed: determines the prompts and the per-prompt sampling seeds."""
    engine: str = "hf"
    """Engine that samples the text (engines draw different text from the same seeds)."""

    @property
    def key(self) -> str:
        # The adapter path is where the weights live, not what they are: hash without it.
        teacher = {**dataclasses.asdict(self.teacher), "adapter": None}
        # Only a system-prompt teacher's text depends on the probe set (its trait prompt comes from it).
        probe_set = self.probe_set if self.teacher.kind == "system_prompt" else None
        return content_key({"model": self.model_hash, "teacher": teacher, "probe_set": probe_set,
                            "context": context_fingerprint(self.context), "data": self.data, "seed": self.seed, **engine_key(self.engine), "v": 2})


def engine_key(engine: str) -> dict:
    """An engine's part of a cache key: nothing for HF (the keys made before engines were keyed), else its name."""
    return {} if engine == "hf" else {"engine": engine}


def context_fingerprint(context) -> dict:
    """What a chat context renders, for cache keys: its id plus a hash of its template source."""
    return {"id": context.id, "template": content_key(context.template.source)}


def sample_seed(dataset_seed: int, index: int) -> int:
    """Per-prompt sampling seed; independent of the teacher (common random numbers)."""
    return derive_seed("teacher-sample", dataset_seed, index) % (2**31)


def generate_dataset(engine: Engine, spec: DatasetSpec, progress: bool = False) -> tuple[list[Example], dict]:
    """Sample one completion per prompt, filter, keep the first `n_keep + n_heldout` accepted (in prompt
    order). Prompts are sent in chunks and generation stops once enough are accepted: the kept examples are
    the same as if every prompt had been sampled (per-prompt seeds), at a fraction of the cost."""
    from tqdm import tqdm

    context = spec.context
    wanted = spec.data.n_keep + spec.data.n_heldout
    prompts = number_prompts(spec.data.n_prompts, spec.seed)
    seeds = [sample_seed(spec.seed, i) for i in range(len(prompts))]
    requests = [
        GenerateRequest(prompt=context.render_prompt(p.text), adapter=spec.teacher.adapter, n=1,
                        temperature=spec.data.temperature, max_tokens=spec.data.max_tokens, seed=s,
                        context_id=context.id, charset=NUMBER_CHARSET if spec.data.constrained else None)
        for p, s in zip(prompts, seeds)
    ]
    texts: list[str] = []
    verdicts: list = []
    accepted = 0
    bar = tqdm(total=wanted, desc=f"teacher {spec.teacher.id}", unit="example", leave=False, disable=not progress)
    for start in range(0, len(requests), GENERATION_CHUNK):
        chunk = [r.completions[0].text for r in engine.generate(requests[start:start + GENERATION_CHUNK])]
        chunk_verdicts, _ = filter_completions(chunk)
        texts += chunk
        verdicts += chunk_verdicts
        new = sum(v.accepted for v in chunk_verdicts)
        bar.update(min(new, wanted - accepted))
        accepted += new
        if accepted >= wanted:
            break
    bar.close()
    stats = filter_stats(verdicts)
    examples = [
        Example(index=i, prompt=p.text, completion=text, prompt_seed=p.seed, sample_seed=s)
        for i, (p, s, text, v) in enumerate(zip(prompts, seeds, texts, verdicts)) if v.accepted
    ][:wanted]
    provenance = {
        "model_hash": spec.model_hash, "teacher": dataclasses.asdict(spec.teacher), "teacher_id": spec.teacher.id,
        "probe_set": spec.probe_set, "context_id": context.id,
        "dataset_seed": spec.seed, "sampling": dataclasses.asdict(spec.data), "engine": engine.name,
        "filter": stats.to_dict(), "n_kept": len(examples),
        "prompts_sampled": len(texts), "shortfall": wanted - len(examples),
    }
    return examples, provenance


def build_dataset(store: ArtifactStore, engine_factory, spec: DatasetSpec) -> Path:
    """The cached dataset directory for `spec`, generated with `engine_factory()` if missing."""

    def builder(directory: Path) -> dict:
        with engine_factory() as engine:
            examples, provenance = generate_dataset(engine, spec, progress=True)
        write_dataset(directory, examples, provenance)
        return {"n_kept": len(examples), "acceptance_rate": provenance["filter"]["acceptance_rate"]}

    return store.get_or_build("dataset", spec.key, builder, meta={"teacher": spec.teacher.id, "seed": spec.seed})


