"""The audit run, resolved once at start-up: `resolve_run(config)` checks every option against the world.

Profile with its overrides applied, the probe set (loaded and hashed), traits checked against its panel,
the model resolved once with its chat template (compiled and test-rendered in the sandbox), each adapter
validated and hashed once, the engine and dtype chosen. Every bad value raises a one-line `UsageError`
before any check is collected, which the plugin turns into exit 4. Nothing downstream re-resolves.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.config import AuditConfig
from audit.errors import SubauditError, UsageError
from audit.results import Protocol

if TYPE_CHECKING:
    from audit.chat import ChatContext
    from audit.engines import AdapterInfo
    from audit.models import ResolvedModel
    from audit.pipeline.profiles import Profile
    from audit.probes import ProbeSet


@dataclass(frozen=True)
class ProbeSetRef:
    """The probe set of the run: how it was named, where it was read from, its content hash."""

    name: str
    """As given to --probe-set (a name in probes/ or a path); part of the teacher datasets' cache keys."""
    path: Path
    """The YAML file that was read."""
    sha256: str
    """sha256 of that file (provenance)."""
    probes: "ProbeSet"
    """The validated probe set."""


@dataclass(frozen=True)
class ResolvedAdapter:
    """An adapter to gate, validated against the base model."""

    name: str
    """Its folder's name (made unique within the run): the adapter's part of the gate's test ids."""
    path: Path
    """Resolved adapter folder."""
    content_hash: str
    """sha256 over its files (the same scheme as the model's, audit.models.resolve.content_hash)."""
    info: "AdapterInfo"
    """Rank, alpha, targets and declared base (audit.engines.adapters.validate_adapter)."""


@dataclass(frozen=True)
class AuditRun:
    """Everything the checks and the report need, resolved once. Frozen."""

    config: AuditConfig
    """The options, parsed (audit.config)."""
    passed: dict[str, Any]
    """The options as the user passed them (command line or ini), for provenance."""
    engine: str
    """The engine kind in use: vllm, hf or fake (never auto)."""
    dtype: str
    """The engine dtype in use (never auto)."""
    profile: "Profile"
    """The experiment profile with --ranks and --seeds applied."""
    probe_set: ProbeSetRef
    """The probe set the traits, questions and teacher prompt come from."""
    gate_probe_sets: tuple[ProbeSetRef, ...]
    """The probe families the gate measures: every installed set, or the one --probe-set names."""
    model: "ResolvedModel | None"
    """The base model; None with the fake engine, which loads no weights."""
    adapters: tuple[ResolvedAdapter, ...]
    """The adapters to gate, in the order given; empty when no --adapter was given."""
    negative_control: str | None = None
    """The panel entry scored as a trait no teacher carried (--negative-control); None: off."""

    @property
    def probes(self) -> "ProbeSet":
        return self.probe_set.probes

    @property
    def traits(self) -> tuple[str, ...]:
        return self.config.traits

    def protocol(self) -> Protocol:
        """The experiment these options resolved to, for the provenance."""
        p, columns = self.profile, self.profile.students(self.profile.training_seeds[0])
        return Protocol(
            profile=p.name, ranks=list(p.ranks), full_finetuning=p.include_full, dataset_seeds=list(p.dataset_seeds),
            training_seeds=list(p.training_seeds), teacher_prompts=p.data.n_prompts, examples=p.data.n_keep,
            heldout_examples=p.data.n_heldout, teacher_max_tokens=p.data.max_tokens, teacher_constrained=p.data.constrained,
            epochs={"lora": p.lora.epochs, "full": p.full.epochs},
            batch_size={"lora": p.lora.batch_size, "full": p.full.batch_size},
            precision={"lora": p.lora.precision, "full": p.full.precision},
            lr={s.label: s.lr for s in columns}, objective=p.objective, scorer=p.scorer,
            samples_per_question=p.samples_per_question if p.scorer == "sampled" else None, statistic=p.statistic,
            reading=p.reading, answer_prefix=self.probes.answer_prefix,
            probe_set=self.probe_set.name, probe_set_path=_shown_path(self.probe_set.path),
            probe_set_sha256=self.probe_set.sha256, questions=len(self.probes.questions),
            smallest_effect=self.config.smallest_effect, smallest_effect_floor=self.config.smallest_effect_floor,
            control_columns=list(p.control_columns), negative_control=self.negative_control,
            max_seed_pairs=p.max_seed_pairs, teacher=p.teacher)

    def context(self, system: str = "template-default", permutation: str = "identity") -> "ChatContext":
        """A chat context on the model's own template (the shipped Qwen2.5 template for the fake engine)."""
        if self.model is None:
            from audit.chat import qwen_context

            return qwen_context(system, permutation)
        return self.model.context(system, permutation)


def _shown_path(path: Path) -> str:
    """A shipped file relative to the repository (reports travel between machines), any other one as given."""
    from audit.probes import PROBES_DIR

    try:
        return str(path.resolve().relative_to(PROBES_DIR.parent))
    except ValueError:
        return str(path)


def resolve_engine_kind(kind: str) -> str:
    """auto -> vllm on a CUDA host, else hf (on this CPU class HF is the measured safer default, DESIGN.md §5)."""
    if kind != "auto":
        return kind
    return "vllm" if shutil.which("nvidia-smi") else "hf"


def resolve_dtype(dtype: str, engine: str) -> str:
    if dtype != "auto":
        return dtype
    return "bfloat16" if engine == "vllm" and shutil.which("nvidia-smi") else "float32"


def resolve_profile(config: AuditConfig) -> "Profile":
    """The named profile with the options that size it applied; ProfileError (a UsageError) for an unknown name."""
    from audit.pipeline.profiles import get_profile

    profile = get_profile(config.profile)
    overrides: dict[str, Any] = {name: value for name, value in (
        ("ranks", config.ranks), ("training_seeds", config.seeds), ("control_columns", config.control_columns or None),
        ("teacher", config.teacher), ("objective", config.objective)) if value is not None}
    cap = config.max_seed_pairs
    starts = len(profile.dataset_seeds) * len(overrides.get("training_seeds", profile.training_seeds))
    if cap is not None and cap < starts:
        raise UsageError(f"--max-seed-pairs {cap} is below the {starts} seed pairs profile {profile.name} starts with; "
                         "raise it, or start with fewer (--seeds)")
    if cap is None and profile.max_seed_pairs is not None:
        cap = max(profile.max_seed_pairs, starts)  # --seeds beyond the profile's cap start a fixed design
    return replace(profile, **overrides, max_seed_pairs=cap)


def default_traits(config: AuditConfig, passed: dict[str, Any]) -> AuditConfig:
    """Without --trait, the default (cat) where the probe set's panel has it, else the panel's first entry: a gate
    run restricted to `--probe-set band` needs no trait of its own."""
    from audit.probes import load_probe_set, probe_set_path

    if "trait" in passed:
        return config
    names = load_probe_set(probe_set_path(config.probe_set)).names
    return config if all(t in names for t in config.traits) else replace(config, traits=(names[0],))


def resolve_probe_set(config: AuditConfig) -> ProbeSetRef:
    """Load the probe set and check every trait is on its panel (naming a set that has it, if one does)."""
    from audit.cache import sha256_file
    from audit.probes import available_probe_sets, load_probe_set, probe_set_path

    path = probe_set_path(config.probe_set)
    probes = load_probe_set(path)
    for trait in config.traits:
        if trait in probes.names:
            continue
        elsewhere = [name for name in available_probe_sets() if name != config.probe_set
                     and trait in load_probe_set(name).names]
        hint = (f"pass --probe-set {elsewhere[0]}, whose panel has it" if elsewhere
                else "pick one of them or add it to the probe file")
        raise UsageError(f"--trait {trait}: not on the {probes.category} panel of probe set {config.probe_set} "
                         f"({', '.join(probes.names)}); {hint}")
    return ProbeSetRef(config.probe_set, path, sha256_file(path), probes)


NEGATIVE_CONTROLS = ("dolphin",)
"""Entries `--negative-control auto` picks, in order: dolphin never transmitted in Nief et al.'s runs."""


def resolve_negative_control(config: AuditConfig, probes: "ProbeSet") -> str | None:
    """The negative-control entry: on the panel and not a trait; None when off or (auto) the panel has none."""
    name = config.negative_control
    if name == "none":
        return None
    if name == "auto":
        return next((e for e in NEGATIVE_CONTROLS if e in probes.names and e not in config.traits), None)
    if name not in probes.names or name in config.traits:
        why = "is a trait of this run" if name in config.traits else f"is not on the panel ({', '.join(probes.names)})"
        raise UsageError(f"--negative-control {name}: {why}; pass another panel entry, auto or none")
    return name


def adapter_folders(path: Path) -> list[Path]:
    """An adapter folder, or each adapter folder inside a folder of them (one level, sorted)."""
    if (path / "adapter_config.json").is_file() or not path.is_dir():
        return [path]  # validate_adapter names what is wrong with it
    inside = sorted(p for p in path.iterdir() if (p / "adapter_config.json").is_file())
    if not inside:
        raise UsageError(f"--adapter {path}: neither an adapter folder (adapter_config.json) nor a folder of them; "
                         "pass the folder peft's save_pretrained wrote")
    return inside


def adapter_name(path: Path) -> str:
    """A readable name: the folder's, or its parent's where the folder has peft's generic name ("adapter"),
    without a trailing cache key."""
    name = path.parent.name if path.name in ("adapter", "lora", "adapter_model") and path.parent.name else path.name
    return re.sub(r"-[0-9a-f]{16}$", "", name)


def resolve_gate_probe_sets(config: AuditConfig, passed: dict[str, Any], chosen: ProbeSetRef) -> tuple[ProbeSetRef, ...]:
    """Every installed probe set (the chosen one first), unless --probe-set named one: hidden traits are by
    definition the ones nobody named, so the gate looks at every family it has."""
    from audit.cache import sha256_file
    from audit.probes import available_probe_sets, load_probe_set, probe_set_path

    if "probe_set" in passed:
        return (chosen,)
    others = [name for name in available_probe_sets() if name != chosen.name]
    return (chosen, *(ProbeSetRef(n, probe_set_path(n), sha256_file(probe_set_path(n)), load_probe_set(n)) for n in others))


def resolve_adapters(paths: tuple[Path, ...], model: "ResolvedModel | None", engine: str) -> tuple[ResolvedAdapter, ...]:
    """Validate each adapter once (against the model's shapes when a model is loaded) and hash it."""
    from audit.engines.adapters import validate_adapter
    from audit.models.resolve import content_hash

    max_rank = None
    if engine == "vllm":
        from audit.engines.vllm import VLLM_LORA_RANKS  # the module imports vllm lazily

        max_rank = VLLM_LORA_RANKS[-1]
    out: list[ResolvedAdapter] = []
    for path in dict.fromkeys(p for given in paths for p in adapter_folders(given)):
        info = validate_adapter(path, model, max_rank=max_rank)
        if any(a.path == info.path for a in out):
            continue
        name, taken = adapter_name(info.path), {a.name for a in out}
        name = next(f"{name}-{i}" for i in range(2, len(out) + 3) if f"{name}-{i}" not in taken) if name in taken else name
        out.append(ResolvedAdapter(name, info.path, content_hash(info.path), info))
    return tuple(out)


def check_vllm_ranks(profile: "Profile") -> None:
    """vLLM serves LoRA up to its largest max_lora_rank; a grid beyond it cannot be scored there."""
    from audit.engines.vllm import VLLM_LORA_RANKS  # the module imports vllm lazily

    too_big = [r for r in profile.ranks if r > VLLM_LORA_RANKS[-1]]
    if too_big:
        raise UsageError(f"rank {too_big[0]} is above vLLM's largest LoRA rank {VLLM_LORA_RANKS[-1]}; pass --ranks "
                         f"up to {VLLM_LORA_RANKS[-1]} or --engine hf")


def _longest_texts(model: "ResolvedModel", probes: "ProbeSet", traits: tuple[str, ...]) -> dict[str, list[str]]:
    """The longest texts of each kind a stage renders, one per system mode the audit can use (the registry's custom
    and user-prefix modes, the trait teachers' prompts): a teacher or student conversation with the longest number
    prompt (without its completion), and a probe question with the answer prefix and the longest form."""
    from audit.chat.system_prompts import SYSTEM_PROMPTS
    from audit.numbers import longest_number_prompt

    modes = ["template-default", "empty", *(f"{kind}:{name}" for name in SYSTEM_PROMPTS
                                             for kind in ("custom", "as-user-prefix"))]
    modes += [f"text:{probes.teacher_prompt(t)}" for t in traits]
    contexts = [model.context(mode) for mode in modes]
    number = longest_number_prompt()
    question = max(probes.questions, key=len)
    form = max((f for entry in probes.panel for f in entry.surface_forms), key=len)
    return {"teacher example": ["".join(c.render_example(number, "")) for c in contexts],
            "probe question": [c.render_prompt(question) + probes.answer_prefix + form for c in contexts]}


def _token_counter(model_path: Path):
    """Tokens of a text under the model's tokenizer: its tokenizer.json through `tokenizers` (a fraction of a second),
    else transformers' AutoTokenizer (seconds: the import)."""
    if (model_path / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        fast = Tokenizer.from_file(str(model_path / "tokenizer.json"))
        return lambda text: len(fast.encode(text, add_special_tokens=False).ids)
    from transformers import AutoTokenizer

    slow = AutoTokenizer.from_pretrained(model_path)
    return lambda text: len(slow(text, add_special_tokens=False)["input_ids"])


def check_sequence_fit(profile: "Profile", model: "ResolvedModel", probes: "ProbeSet", traits: tuple[str, ...],
                       engine: str) -> None:
    """The profile's longest sequence (a teacher example with `max_tokens` of completion) must fit the model's
    positions (and vLLM's max_model_len). UTF-8 bytes bound the tokens of a byte-level tokenizer, so the tokenizer is
    loaded only when that bound does not fit."""
    import json

    config = json.loads((model.path / "config.json").read_text())
    limit = config.get("max_position_embeddings") or config.get("n_positions")
    if not limit:
        return
    where = f"{model.name}'s {limit} positions"
    if engine == "vllm":
        from audit.engines.vllm import _default_max_model_len

        limit = _default_max_model_len(model.path)
        where = f"the vLLM engine's max_model_len {limit}"
    extra = {"teacher example": profile.data.max_tokens, "probe question": 0}
    texts = _longest_texts(model, probes, traits)
    if all(max(len(t.encode()) for t in group) + extra[kind] <= limit for kind, group in texts.items()):
        return
    count = _token_counter(model.path)
    for kind, group in texts.items():  # the most bytes need not be the most tokens: count every context's text
        tokens = max(count(t) for t in group) + extra[kind]
        if tokens > limit:
            completion = f" + {extra[kind]} completion tokens (max_tokens)" if extra[kind] else ""
            raise UsageError(f"profile {profile.name}: the longest {kind} is {tokens - extra[kind]} tokens{completion}, "
                             f"beyond {where}; use a profile with fewer max_tokens or a model with a longer context")


def resolve_run(config: AuditConfig, passed: dict[str, Any] | None = None) -> AuditRun:
    """Resolve every option; any SubauditError on the way becomes a one-line UsageError."""
    from audit.models import resolve_model

    engine = resolve_engine_kind(config.engine)
    try:
        profile = resolve_profile(config)
        config = default_traits(config, passed or {})
        probe_set = resolve_probe_set(config)
        negative_control = resolve_negative_control(config, probe_set.probes)
        gate_probe_sets = resolve_gate_probe_sets(config, passed or {}, probe_set)
        model = None if engine == "fake" else resolve_model(config.model)
        if model is not None:
            model.context().render_prompt("Name your favorite animal.")  # a hostile or broken template stops here
        adapters = resolve_adapters(config.adapters, model, engine)
        if engine == "vllm":
            check_vllm_ranks(profile)
        if model is not None:
            check_sequence_fit(profile, model, probe_set.probes, config.traits, engine)
        if config.ray_address is not None and config.executor != "ray":
            raise UsageError(f"--ray-address {config.ray_address} needs --executor ray; add it or drop the address")
    except UsageError:
        raise
    except SubauditError as exc:
        raise UsageError(str(exc)) from exc
    return AuditRun(config=config, passed=dict(passed or {}), engine=engine, dtype=resolve_dtype(config.dtype, engine),
                    profile=profile, probe_set=probe_set, gate_probe_sets=gate_probe_sets, model=model, adapters=adapters,
                    negative_control=negative_control)
