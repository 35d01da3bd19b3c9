"""Teacher datasets on disk: ``examples.jsonl`` (one training pair per line) + ``provenance.json``. Pure I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audit.errors import SubauditError

EXAMPLES_FILE = "examples.jsonl"
PROVENANCE_FILE = "provenance.json"


class DatasetError(SubauditError):
    """A teacher dataset is missing or malformed (one line, naming the fix)."""


@dataclass(frozen=True)
class Example:
    """One training pair: a number prompt and the teacher's accepted completion."""

    index: int
    """Position of the prompt in the dataset's prompt list (shared by teacher and control)."""
    prompt: str
    """The user message (a number prompt), rendered into a chat context at training time."""
    completion: str
    """The teacher's completion text, accepted by the filter."""
    prompt_seed: int
    """Seed that determines the prompt text."""
    sample_seed: int
    """Sampling seed of the completion (common random numbers: the same for teacher and control)."""


@dataclass(frozen=True)
class TeacherDataset:
    examples: tuple[Example, ...]
    provenance: dict
    """Model hash, teacher, context id, seeds, sampling settings, filter stats."""


def write_dataset(directory: Path, examples: list[Example], provenance: dict) -> None:
    with open(directory / EXAMPLES_FILE, "w") as f:
        for ex in examples:
            f.write(json.dumps(ex.__dict__, sort_keys=True) + "\n")
    (directory / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, sort_keys=True))


def read_dataset(directory: Path) -> TeacherDataset:
    try:
        lines = (Path(directory) / EXAMPLES_FILE).read_text().splitlines()
        provenance = json.loads((Path(directory) / PROVENANCE_FILE).read_text())
        examples = tuple(Example(**json.loads(line)) for line in lines if line.strip())
    except (OSError, ValueError, TypeError) as exc:
        raise DatasetError(f"teacher dataset at {directory} is unreadable ({exc}); delete it and rebuild") from exc
    return TeacherDataset(examples, provenance)
