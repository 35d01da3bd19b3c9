"""Chat templates: named jinja sources, shipped in templates/chat/ or taken from a tokenizer, rendered sandboxed."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audit.chat.sandbox import DEFAULT_LIMITS, RenderLimits, TemplateError, compile_template, render_compiled

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates" / "chat"


@dataclass(frozen=True)
class ChatTemplate:
    """A chat template: its name (used in ids and errors) and its jinja source, exactly as rendered."""

    name: str
    """Short name, e.g. "qwen2.5-instruct"; appears in context ids and error messages."""
    source: str
    """Renderable jinja source (after any layout normalisation)."""
    bos_token: str = ""
    """Value of the `bos_token` variable (the tokenizer's, when built from one)."""
    eos_token: str = ""
    """Value of the `eos_token` variable (the tokenizer's, when built from one)."""

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = False,
        limits: RenderLimits = DEFAULT_LIMITS,
        **variables: Any,
    ) -> str:
        """Render `messages` in the sandbox; any failure is a one-line TemplateError naming this template."""
        context = {
            "messages": [dict(m) for m in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "tools": None,
            **variables,
        }
        return render_compiled(self.name, _compiled(self.name, self.source, limits), context, limits)

    def with_source(self, source: str, name: str | None = None) -> ChatTemplate:
        """The same template (tokens, name unless given) with another source, e.g. a permutation."""
        return ChatTemplate(name or self.name, source, self.bos_token, self.eos_token)


@functools.lru_cache(maxsize=256)
def _compiled(name: str, source: str, limits: RenderLimits):
    return compile_template(name, source, limits)


def _layouts() -> dict[str, str]:
    manifest = TEMPLATES_DIR / "manifest.json"
    return json.loads(manifest.read_text())["layouts"] if manifest.exists() else {}


def compact_upstream_layout(source: str) -> str:
    """The upstream recipe (chujiezheng/chat_templates README) for its pretty-printed files."""
    return source.replace("    ", "").replace("\n", "")


def template_names() -> list[str]:
    """Names of the templates shipped in templates/chat/, sorted."""
    return sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))


def load_template(name: str, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """Load templates/chat/<name>.jinja, normalised as its manifest layout says, and compile-check it."""
    path = TEMPLATES_DIR / f"{name}.jinja"
    if not path.is_file():
        raise TemplateError(name, f"no such template in {TEMPLATES_DIR}; known: {', '.join(template_names())}")
    source = path.read_text(encoding="utf-8")
    if _layouts().get(name, "verbatim") == "upstream-compact":
        source = compact_upstream_layout(source)
    template = ChatTemplate(name, source, bos_token, eos_token)
    _compiled(template.name, template.source, DEFAULT_LIMITS)
    return template


@functools.lru_cache(maxsize=1)
def _shipped_by_source() -> dict[str, str]:
    return {load_template(name).source: name for name in template_names()}


def model_template(name: str, source: str | None, bos_token: str = "", eos_token: str = "") -> ChatTemplate:
    """A model folder's own chat template, compile-checked in the sandbox.

    A source identical to a shipped template takes that template's name, so contexts on the same text have
    the same id (and cache keys) whatever the model folder is called; any other source is named `name`.
    """
    if source is None:
        raise TemplateError(name, "the model folder has no chat template (chat_template.jinja or tokenizer_config.json); "
                                  "add the model's template there")
    template = ChatTemplate(_shipped_by_source().get(source, name), source, bos_token, eos_token)
    _compiled(template.name, template.source, DEFAULT_LIMITS)
    return template


def template_from_tokenizer(tokenizer: Any, name: str) -> ChatTemplate:
    """The tokenizer's own chat template and special tokens, as transformers would render them."""
    source = getattr(tokenizer, "chat_template", None)
    if not isinstance(source, str):
        raise TemplateError(name, "the tokenizer has no single chat template string; pass a template explicitly")
    return ChatTemplate(name, source, tokenizer.bos_token or "", tokenizer.eos_token or "")
