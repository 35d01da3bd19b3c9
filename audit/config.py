"""The audit's options, declared once: each `AuditConfig` field with an `option(...)` is a command-line flag
(`--probe-set`), an ini key (`subaudit_probe_set` under ``[tool.pytest.ini_options]``) and a typed value.

Values come from the command line first, then from the ini file, then from the field's default. Pure: no
pytest, torch or I/O here. Checking values against the world (does the model exist, is the trait on the
panel) is `audit.run`'s job; this module only parses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping

from audit.errors import UsageError

ENGINES = ("auto", "vllm", "hf", "fake")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(UsageError, ValueError):
    """A bad audit option; the message names the option and the fix."""


def parse_int_list(option: str, text: str, minimum: int = 1) -> tuple[int, ...]:
    """Parse "1,4,16" or "1 4 16" into (1, 4, 16); a bad or empty list raises ConfigError naming `option`."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} takes integers separated by commas, e.g. 1,4,16; got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty; give integers separated by commas, e.g. 1,4,16")
    if any(v < minimum for v in values):
        raise ConfigError(f"{option} takes integers >= {minimum}; got {text!r}")
    return tuple(dict.fromkeys(values))


def parse_names(values: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """Flatten repeated and comma-separated names: ["cat,owl", "eagle"] -> ("cat", "owl", "eagle")."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        names.extend(n.strip() for n in value.replace(",", " ").split() if n.strip())
    return tuple(dict.fromkeys(names))  # de-duplicate, keep order


def _text(flag: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if not text:
            raise ConfigError(f"{flag} is empty; give a value or leave the option out")
        return text
    return parse


def _choice(flag: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise ConfigError(f"{flag} must be one of {', '.join(choices)}; got {value!r}")
        return str(value)
    return parse


def _ints(flag: str, minimum: int) -> Callable[[Any], tuple[int, ...]]:
    return lambda value: parse_int_list(flag, str(value), minimum)


def _traits(value: Any) -> tuple[str, ...]:
    names = parse_names(value)
    if not names:
        raise ConfigError("--trait: give at least one trait target, e.g. --trait cat")
    return names


def _control_columns(value: Any) -> tuple[str, ...]:
    from audit.pipeline.profiles import CONTROL_COLUMNS

    names = parse_names(value)
    if names in (("none",), ()):
        return ()
    if names == ("all",):
        return CONTROL_COLUMNS
    unknown = [n for n in names if n not in CONTROL_COLUMNS]
    if unknown:
        raise ConfigError(f"--control-columns: unknown column {unknown[0]!r}; choose from {', '.join(CONTROL_COLUMNS)}, "
                          "all or none")
    return names


def _count(flag: str) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{flag} takes a whole number, e.g. 8; got {value!r}") from None
        if number < 1:
            raise ConfigError(f"{flag} must be >= 1, e.g. 8; got {number}")
        return number
    return parse


def _path(flag: str) -> Callable[[Any], Path]:
    return lambda value: Path(_text(flag)(value)).expanduser()


def _paths(flag: str) -> Callable[[Any], tuple[Path, ...]]:
    def parse(value: Any) -> tuple[Path, ...]:
        values = [value] if isinstance(value, str) else list(value)
        return tuple(dict.fromkeys(_path(flag)(v) for v in values))
    return parse


def _margin(value: Any) -> float:
    try:
        margin = float(value)
    except ValueError:
        raise ConfigError(f"--margin takes a number, e.g. 0.02; got {value!r}") from None
    if not 0 < margin < 1:
        raise ConfigError(f"--margin is a probability shift in (0, 1), e.g. 0.02; got {value}")
    return margin


def _positive(flag: str, example: str, upper: float | None = None) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{flag} takes a number, e.g. {example}; got {value!r}") from None
        if not 0 < number or (upper is not None and not number < upper):
            bounds = f"in (0, {upper:g})" if upper is not None else "> 0"
            raise ConfigError(f"{flag} must be {bounds}, e.g. {example}; got {value}")
        return number
    return parse


def _switch(flag: str) -> Callable[[Any], bool]:
    def parse(value: Any) -> bool:
        text = str(value).strip().lower()
        if text not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"{flag} is a switch: give it alone on the command line, or true/false in the ini file; got {value!r}")
        return text in ("true", "1", "yes")
    return parse


def parse_duration(text: str) -> float:
    """"2h", "90m", "1h30m", "300s" or seconds -> seconds; ValueError when it is none of those."""
    text = str(text).strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?", text)
    if not text or parts is None or not any(parts.groups()):
        raise ValueError(text)
    h, m, s = (float(g or 0) for g in parts.groups())
    return h * 3600 + m * 60 + s


def _budget(value: Any) -> float:
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ConfigError(f"--budget takes a duration, e.g. 2h, 90m or 1h30m; got {value!r}") from None
    if seconds <= 0:
        raise ConfigError(f"--budget must be a positive duration, e.g. 2h; got {value!r}")
    return seconds


def option(default: Any, help: str, parse: Callable[[Any], Any], *, flag: str, repeatable: bool = False,
           switch: bool = False) -> Any:
    """A field that is also a pytest option `flag` (and ini key subaudit_<field name>); a switch takes no value."""
    return field(default=default, metadata={"flag": flag, "help": help, "parse": parse, "repeatable": repeatable,
                                            "switch": switch})


@dataclass(frozen=True)
class AuditConfig:
    """What the user asked for, parsed and typed. Frozen; `audit.run.resolve_run` checks it against the world."""

    model: str = option("tiny-qwen", "Base model: alias (tiny-qwen, smollm2, qwen), a local model folder or an "
                        "Org/Name in the HF cache. Turns the audit on. Default tiny-qwen when running audit/.",
                        _text("--model"), flag="--model")
    """Base model: an alias (tiny-qwen, smollm2, qwen), a local Hugging Face folder or an Org/Name in the HF cache."""
    adapters: tuple[Path, ...] = option((), "LoRA adapter folder to gate against its base (repeatable; a folder of "
                                        "adapter folders gates each); enables the gate checks (-m gate).",
                                        _paths("--adapter"), flag="--adapter", repeatable=True)
    """LoRA adapter folders to gate (a folder holding adapter folders stands for each of them); none: the gate skips."""
    traits: tuple[str, ...] = option(("cat",), "Trait target(s) to test claims for, from the probe set's panel "
                                     "(repeatable or comma-separated, default cat).", _traits, flag="--trait",
                                     repeatable=True)
    """Trait targets to test claims for, e.g. ("cat", "owl"); each must be on the probe set's panel."""
    probe_set: str = option("animal", "Probe set: a name in probes/ (animal, tree) or a path to your own YAML "
                            "(default animal).", _text("--probe-set"), flag="--probe-set")
    """Probe set whose panel, questions and teacher prompt the traits come from: a name in probes/ or a YAML path."""
    profile: str = option("quick", "Experiment profile: quick (tiny-qwen on a CPU), real-cpu (SmolLM2 on a CPU), "
                          "paper, positive (the positive control), tiny (default quick).", _text("--profile"),
                          flag="--profile")
    """Experiment profile of the pipeline (audit.pipeline.profiles)."""
    ranks: tuple[int, ...] | None = option(None, "LoRA ranks of the rank curve, comma-separated (default: the profile's).",
                                           _ints("--ranks", 1), flag="--ranks")
    """LoRA ranks of the rank curve; None uses the profile's ranks."""
    seeds: tuple[int, ...] | None = option(None, "Training seed replicates, comma-separated, >= 0 (default: the profile's).",
                                           _ints("--seeds", 0), flag="--seeds")
    """Training seeds of the students (one seed pair per dataset seed and training seed); None uses the profile's."""
    engine: str = option("auto", "Inference engine: auto, vllm, hf or fake (default auto: vllm on GPU hosts, hf on CPU).",
                         _choice("--engine", ENGINES), flag="--engine")
    """Inference engine: auto (vllm on a GPU host, else hf), vllm, hf or fake."""
    dtype: str = option("auto", "Engine dtype: auto, float32, bfloat16, float16 (default auto).",
                        _choice("--dtype", DTYPES), flag="--dtype")
    """Engine dtype: auto (float32 on CPU, bfloat16 with vLLM on GPU), float32, bfloat16, float16."""
    report_dir: Path = option(Path("reports"), "Folder for <run>/report.html, report.md and results.json (default reports).",
                              _path("--report-dir"), flag="--report-dir")
    """Folder that receives <run>/report.html, report.md and results.json."""
    margin: float = option(0.02, "Gate equivalence margin: largest |shift| of an answer's P counted as no effect "
                           "(default 0.02).", _margin, flag="--margin")
    """The gate's equivalence margin: the largest absolute shift of an answer's probability that counts as 'no
    effect' of an adapter (TOST). The claims use `smallest_effect` instead."""
    smallest_effect: float = option(1.0, "Claims: smallest transmission of interest, as a multiple of the trait's "
                                    "rate in the control students (default 1.0: doubling it).",
                                    _positive("--smallest-effect", "1.0"), flag="--smallest-effect")
    """The claims' smallest effect of interest, relative: transmission below this multiple of the trait's rate in
    the control students is no effect of interest (equivalence margins are the same), never below the floor."""
    smallest_effect_floor: float = option(0.01, "Claims: least smallest effect of interest, in probability "
                                          "(default 0.01).", _positive("--smallest-effect-floor", "0.01", 1.0),
                                          flag="--smallest-effect-floor")
    """The least smallest effect of interest, in probability: a trait whose control rate is near 0 would otherwise
    make any noise interesting."""
    teacher: str | None = option(None, "Claims: where the trait teacher's trait lives: system-prompt (the paper's) or "
                                 "adapter (a LoRA trained to answer the trait; default: the profile's).",
                                 _choice("--teacher", ("system-prompt", "adapter")), flag="--teacher")
    """The trait teacher (audit.pipeline.profiles.Profile.teacher); None keeps the profile's."""
    objective: str | None = option(None, "Claims: student objective: hard (the teacher's sampled tokens, the paper's) "
                                   "or soft (KL to the teacher's distribution; default: the profile's).",
                                   _choice("--objective", ("hard", "soft")), flag="--objective")
    """The students' objective (hard or soft labels); None keeps the profile's."""
    control_columns: tuple[str, ...] = option((), "Claims: control columns of the rank grid, comma-separated: "
                                              "full-lora-lr (full FT at the LoRA learning rate), rslora (rank-stabilised "
                                              "LoRA at every rank), all or none (default none).", _control_columns,
                                              flag="--control-columns")
    """Control columns trained beside the reference grid (audit.pipeline.profiles.CONTROL_COLUMNS), each deciding a
    claim without one of its step-size confounds; () keeps the profile's."""
    max_seed_pairs: int | None = option(None, "Claims: add seed pairs (doubling the training seeds) until the rank "
                                        "and full-FT claims are decided or N seed pairs are reached, alpha spent across "
                                        "the looks (default: the profile's; none has a cap, so the design is fixed).",
                                        _count("--max-seed-pairs"), flag="--max-seed-pairs")
    """Cap of the sequential design (audit.stats.sequential); None keeps the profile's (a fixed design in every
    shipped profile)."""
    negative_control: str = option("auto", "Claims: panel entry scored on the same students as a trait no teacher "
                                   "carried (default auto: dolphin where the panel has it; none: off).",
                                   _text("--negative-control"), flag="--negative-control")
    """A panel entry that should not move (Nief et al.: dolphin never transmitted), measured on the trait's students
    at no training cost; "auto" picks dolphin where the panel has it and it is not a trait, "none" turns it off."""
    executor: str = option("local", "Where grid cells compute: local (this machine, the profile's workers) or ray "
                           "(Ray tasks, one CPU or GPU each, retried when a worker dies; pip install 'subaudit[ray]').",
                           _choice("--executor", ("local", "ray")), flag="--executor")
    """Where the claims' grid cells compute (audit.pipeline.executors)."""
    ray_address: str | None = option(None, "Ray cluster head to join (host:port of `ray start --head`; default: a local "
                                     "cluster started for the run).", _text("--ray-address"), flag="--ray-address")
    """The Ray head's address for --executor ray; None starts a local cluster."""
    plan: bool = option(False, "Print the claims' plan (datasets, students, steps, tokens, scoring passes, estimated "
                        "wall time here) and stop.", _switch("--plan"), flag="--plan", switch=True)
    """Print the plan of the claims' grids and run nothing (audit.plan)."""
    budget: float | None = option(None, "Refuse, before any work, a claims grid whose estimated wall time here exceeds "
                                  "this duration (e.g. 2h, 90m), naming a smaller grid that fits.", _budget,
                                  flag="--budget")
    """Seconds the claims' rank grid may take by the plan's estimate; None: no limit."""
    localisation_share: float = 0.5
    """Share of the full effect that 'entity only' gated LoRA must recover for the localisation claim."""


def options() -> list[Any]:
    """The fields of AuditConfig that are options, in declaration order."""
    return [f for f in fields(AuditConfig) if "flag" in f.metadata]


def dest(f: Any) -> str:
    """An option's name without dashes: `--probe-set` -> probe_set (ini key subaudit_probe_set)."""
    return f.metadata["flag"].removeprefix("--").replace("-", "_")


def build_config(cli: Mapping[str, Any], ini: Mapping[str, Any]) -> tuple[AuditConfig, dict[str, Any]]:
    """Parse command-line values over ini values over defaults; returns the config and the options as passed.

    Both mappings are keyed by `dest` (trait, probe_set, ...). A command-line value of None means "not given" (an empty string is
    given, and refused); an ini value of None, "" or [] means "not set" (pytest's default for an absent key).
    """
    values: dict[str, Any] = {}
    passed: dict[str, Any] = {}
    for f in options():
        name = dest(f)
        raw = cli.get(name)
        if raw is None and ini.get(name) not in (None, "", []):
            raw = ini[name]
        if raw is None:
            continue
        passed[name] = list(raw) if isinstance(raw, (list, tuple)) else raw
        values[f.name] = f.metadata["parse"](raw)
    return AuditConfig(**values), passed
