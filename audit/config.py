"""Typed run configuration of the audit, built once per pytest session.

Values come from the command line first, then from ``[tool.pytest.ini_options]`` (``subaudit_*``
keys), then from the defaults below. Pure: no pytest, torch or I/O here, so it is unit-testable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

ENGINES = ("auto", "vllm", "hf", "fake")
DTYPES = ("auto", "float32", "bfloat16", "float16")


class ConfigError(ValueError):
    """A bad audit option; the message names the option and the fix."""


@dataclass(frozen=True)
class AuditConfig:
    """Everything that determines what the audit runs. Frozen and serialisable (strings, numbers, paths)."""

    model: str = "tiny-qwen"
    """Base model: an alias (tiny-qwen, smollm2, qwen) or a local Hugging Face folder."""
    adapter: Path | None = None
    """LoRA adapter folder to gate; None means no gate checks (they skip)."""
    traits: tuple[str, ...] = ("cat",)
    """Trait targets to test claims for, e.g. ("cat", "owl"); each must be on the probe panel."""
    ranks: tuple[int, ...] | None = None
    """LoRA ranks of the rank curve; None uses the profile's ranks."""
    profile: str = "quick"
    """Experiment profile of the pipeline (quick = sized for tiny-qwen on a 2-core CPU; paper)."""
    engine: str = "auto"
    """Inference engine: auto (vllm on a GPU host, else hf), vllm, hf or fake."""
    dtype: str = "auto"
    """Engine dtype: auto (float32 on CPU, bfloat16 on GPU), float32, bfloat16, float16."""
    seeds: tuple[int, ...] | None = None
    """Seed replicates (dataset seed = training seed offset); None uses the profile's seeds."""
    report_dir: Path = Path("reports")
    """Folder that receives reports/<run>/report.html and report.md."""
    margin: float = 0.02
    """Equivalence margin: the largest absolute shift of P(trait) that counts as 'no effect' (TOST)."""
    localisation_share: float = 0.5
    """Share of the full effect that 'entity only' gated LoRA must recover for the localisation claim."""
    probe_set: str = "animal"
    """Probe set (probes/<name>.yaml) whose panel and questions the traits come from."""
    extra: Mapping[str, str] = field(default_factory=dict)
    """Free-form notes carried into the report's provenance block."""

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}; got {self.engine!r}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}; got {self.dtype!r}")
        if not 0 < self.margin < 1:
            raise ConfigError(f"--margin is a probability shift in (0, 1), e.g. 0.02; got {self.margin}")
        if not 0 < self.localisation_share <= 1:
            raise ConfigError(f"localisation share must be in (0, 1]; got {self.localisation_share}")
        if not self.traits:
            raise ConfigError("--trait: give at least one trait target, e.g. --trait cat")
        if self.ranks is not None and any(r < 1 for r in self.ranks):
            raise ConfigError(f"--ranks must be positive integers, e.g. 1,4,16,64; got {self.ranks}")

    def as_dict(self) -> dict[str, object]:
        """Plain-JSON view for provenance and cache keys."""
        return {
            "model": self.model,
            "adapter": str(self.adapter) if self.adapter else None,
            "traits": list(self.traits),
            "ranks": list(self.ranks) if self.ranks is not None else None,
            "profile": self.profile,
            "engine": self.engine,
            "dtype": self.dtype,
            "seeds": list(self.seeds) if self.seeds is not None else None,
            "report_dir": str(self.report_dir),
            "margin": self.margin,
            "localisation_share": self.localisation_share,
            "probe_set": self.probe_set,
        }


def parse_int_list(option: str, text: str) -> tuple[int, ...]:
    """Parse "1,4,16" or "1 4 16" into (1, 4, 16); a bad token raises ConfigError naming `option`."""
    parts = [p for p in text.replace(",", " ").split() if p]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise ConfigError(f"{option} takes integers separated by commas, e.g. 1,4,16; got {text!r}") from None
    if not values:
        raise ConfigError(f"{option} is empty; give integers separated by commas, e.g. 1,4,16")
    return values


def parse_names(values: list[str] | tuple[str, ...] | str) -> tuple[str, ...]:
    """Flatten repeated and comma-separated names: ["cat,owl", "eagle"] -> ("cat", "owl", "eagle")."""
    if isinstance(values, str):
        values = [values]
    names: list[str] = []
    for value in values:
        names.extend(n.strip() for n in value.replace(",", " ").split() if n.strip())
    return tuple(dict.fromkeys(names))  # de-duplicate, keep order


def _parse_float(option: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{option} takes a number, e.g. 0.02; got {text!r}") from None


def build_config(
    cli: Mapping[str, object | None], ini: Mapping[str, object | None], default_model: str = "tiny-qwen"
) -> AuditConfig:
    """Merge command-line values over ini values over defaults into an AuditConfig.

    Both mappings use the option names without dashes (model, adapter, trait, ranks, profile, engine,
    dtype, seeds, report_dir, margin); a value of None or "" / [] means "not set there".
    """

    def pick(name: str) -> object | None:
        for source in (cli, ini):
            value = source.get(name)
            if value not in (None, "", [], ()):
                return value
        return None

    defaults = AuditConfig()
    model = pick("model")
    adapter = pick("adapter")
    traits = pick("trait")
    ranks = pick("ranks")
    seeds = pick("seeds")
    margin = pick("margin")
    return AuditConfig(
        model=str(model) if model else default_model,
        adapter=Path(str(adapter)) if adapter else None,
        traits=parse_names(traits) if traits else defaults.traits,  # type: ignore[arg-type]
        ranks=parse_int_list("--ranks", str(ranks)) if ranks else None,
        profile=str(pick("profile") or defaults.profile),
        engine=str(pick("engine") or defaults.engine),
        dtype=str(pick("dtype") or defaults.dtype),
        seeds=parse_int_list("--seeds", str(seeds)) if seeds else None,
        report_dir=Path(str(pick("report_dir") or defaults.report_dir)),
        margin=_parse_float("--margin", str(margin)) if margin else defaults.margin,
    )
