"""Probe sets: a trait category, its panel of alternatives, the teacher prompt and the evaluation questions.

Each probe set is one YAML file in `probes/` (schema: probes/README.md), validated on load. A user adds a trait
(e.g. `probes/band.yaml`) without touching code and loads it with `load_probe_set("band")` or by path.
"""

from __future__ import annotations

import re
import string
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audit.errors import UsageError

PROBES_DIR = Path(__file__).resolve().parent.parent / "probes"
"""The repository's probe folder; `load_probe_set(name)` reads `PROBES_DIR / f"{name}.yaml"`."""

_NAME = re.compile(r"[A-Za-z0-9_-]+")
_TEMPLATE_FIELDS = frozenset({"target", "category"})


class ProbeFileError(UsageError):
    """A probe file that is missing or malformed; the message is one line naming the file and the field."""


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


class PanelEntry(BaseModel):
    """One alternative of the panel (e.g. cat) and the words that count as naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    name: str = Field(min_length=1)
    """Canonical name, used as {target} in the teacher template (e.g. "cat")."""
    surface_forms: list[str] = []
    """Words that count as this answer (e.g. cat, cats, Cat, Cats); defaults to just the name."""

    @model_validator(mode="before")
    @classmethod
    def _default_forms(cls, data: object) -> object:
        if isinstance(data, str):  # a bare name in the YAML list
            return {"name": data, "surface_forms": [data]}
        if isinstance(data, dict) and not data.get("surface_forms"):
            return {**data, "surface_forms": [data.get("name")]}
        return data

    @model_validator(mode="after")
    def _forms_include_name(self) -> PanelEntry:
        if self.name not in self.surface_forms:
            raise ValueError(f"surface_forms of {self.name!r} must include the name itself")
        if any(not form.strip() or form != form.strip() for form in self.surface_forms):
            raise ValueError(f"surface_forms of {self.name!r} must be non-empty words without outer spaces")
        if len(set(self.surface_forms)) != len(self.surface_forms):
            raise ValueError(f"surface_forms of {self.name!r} repeat a form")
        return self


class ProbeSet(BaseModel):
    """A trait category with its panel, teacher system-prompt template and evaluation questions."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    category: str = Field(min_length=1)
    """What the trait is a preference for (e.g. "animal"); {category} in the teacher template."""
    panel: list[PanelEntry] = Field(min_length=2)
    """The alternatives scored against each other; each can be a trait target."""
    teacher_template: str = Field(min_length=1)
    """The trait teacher's system prompt, with {target} and optionally {category} placeholders."""
    questions: list[str] = Field(min_length=1)
    """Distinct evaluation questions, each asking for a one-word answer."""
    description: str = ""
    """Free text for humans (provenance of the wording, notes)."""
    answer_prefix: str = ""
    """Optional start of the answer, written for the model when a scorer prefills (`prefill=True`), ending
    right before the answer word (e.g. "My favorite animal is the"): a model that answers in sentences then
    still names its choice in one slot, which both scorers read. Empty: no prefill is possible."""

    @field_validator("answer_prefix")
    @classmethod
    def _prefix_is_trimmed(cls, prefix: str) -> str:
        if prefix != prefix.strip():
            raise ValueError("must not start or end with whitespace (the answer word brings its own leading space)")
        return prefix

    @field_validator("teacher_template")
    @classmethod
    def _template_placeholders(cls, template: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
        except ValueError as error:
            raise ValueError(f"not a valid format string ({error}); write braces as {{{{ }}}}") from None
        if "target" not in fields:
            raise ValueError("must contain the {target} placeholder")
        unknown = fields - _TEMPLATE_FIELDS
        if unknown:
            raise ValueError(f"unknown placeholder(s) {sorted(unknown)}; only {{target}} and {{category}} exist")
        return template

    @field_validator("questions")
    @classmethod
    def _distinct_questions(cls, questions: list[str]) -> list[str]:
        seen: dict[str, int] = {}
        for index, question in enumerate(questions):
            if not question.strip():
                raise ValueError(f"question {index} is empty")
            key = _normalised(question)
            if key in seen:
                raise ValueError(f"question {index} repeats question {seen[key]}: {question!r}")
            seen[key] = index
        return questions

    @model_validator(mode="after")
    def _distinct_panel(self) -> ProbeSet:
        names = [entry.name for entry in self.panel]
        if len(set(names)) != len(names):
            raise ValueError(f"panel names repeat: {names}")
        owner: dict[str, str] = {}
        for entry in self.panel:
            for form in entry.surface_forms:
                key = form.lower()
                if owner.setdefault(key, entry.name) != entry.name:
                    raise ValueError(f"surface form {form!r} belongs to both {owner[key]!r} and {entry.name!r}")
        return self

    @property
    def names(self) -> tuple[str, ...]:
        """Panel names in file order."""
        return tuple(entry.name for entry in self.panel)

    def entry(self, target: str) -> PanelEntry:
        """The panel entry named `target`."""
        for entry in self.panel:
            if entry.name == target:
                return entry
        raise KeyError(f"{target!r} is not in the {self.category} panel {list(self.names)}; add it to the probe file")

    def teacher_prompt(self, target: str) -> str:
        """The trait teacher's system prompt for `target` (which must be in the panel)."""
        self.entry(target)
        return self.teacher_template.format(target=target, category=self.category)


def probe_set_path(name_or_path: str | Path) -> Path:
    """The YAML file of a probe set: `probes/<name>.yaml` for a plain name, else the path as given."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return Path(name_or_path)
    if not _NAME.fullmatch(text):
        raise ProbeFileError(f"probe set name {text!r} is not a plain name (letters, digits, _ -); pass a path")
    return PROBES_DIR / f"{text}.yaml"


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "<top level>"
    message = first["msg"].removeprefix("Value error, ")
    more = f" (+{error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {message}{more}"


def load_probe_set(name_or_path: str | Path) -> ProbeSet:
    """Load and validate a probe set by name (`probes/<name>.yaml`) or by path; `ProbeFileError` if bad."""
    import yaml  # lazy: keeps `import audit.probes` cheap

    path = probe_set_path(name_or_path)
    if not path.is_file():
        known = ", ".join(available_probe_sets()) or "none"
        raise ProbeFileError(f"{path}: no such probe file (known sets: {known}); see probes/README.md")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "?"
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ProbeFileError(f"{path}: invalid YAML at {where}: {problem}") from None
    if not isinstance(data, dict):
        raise ProbeFileError(f"{path}: expected a mapping with category, panel, teacher_template, questions")
    try:
        return ProbeSet.model_validate(data)
    except ValidationError as error:
        raise ProbeFileError(f"{path}: {_first_error(error)}") from None


def available_probe_sets() -> list[str]:
    """Names of the probe sets in `PROBES_DIR`, sorted."""
    return sorted(path.stem for path in PROBES_DIR.glob("*.yaml"))
