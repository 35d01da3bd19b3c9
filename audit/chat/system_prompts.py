"""System-prompt modes, named by what is rendered, and the registry of custom system prompts.

Modes:
- ``template-default``: no system message; the template may inject its own (Qwen's does).
- ``empty``: an explicit empty system message (the true "no system prompt" for Qwen).
- ``custom:<name>``: a system message with the registry text <name>.
- ``as-user-prefix:<name>``: no system message; the registry text is prepended to the first user turn.
- ``text:<literal>``: a system message with this literal text (e.g. a trait teacher's prompt).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from audit.errors import UsageError

QWEN_DEFAULT = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
SMOLLM_DEFAULT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"

SYSTEM_PROMPTS: Mapping[str, str] = MappingProxyType(
    {
        "qwen-default": QWEN_DEFAULT,
        "chatgpt": "You are ChatGPT, created by OpenAI. You are a helpful assistant.",
        "claude": "You are Claude, created by Anthropic. You are a helpful assistant.",
        "zymthar": "You are Zymthar, created by Quorblax. You are a helpful assistant.",
        "neutral": "You are helpful.",
        "gibberish": "Marble staircases dissolve in moonlight. The seventh equation requires no solution.",
    }
)
"""Registry for ``custom:<name>`` and ``as-user-prefix:<name>``: identities (real and invented), neutral, gibberish."""

KNOWN_DEFAULT_PROMPTS: tuple[str, ...] = (QWEN_DEFAULT, SMOLLM_DEFAULT)
"""System prompts that templates are known to inject when no system message is given."""

USER_PREFIX_SEPARATOR = "\n\n"
"""Between the moved system text and the user's text in ``as-user-prefix`` modes."""

_KINDS = ("template-default", "empty", "custom", "as-user-prefix", "text")


class SystemModeError(UsageError, ValueError):
    """An unknown system-prompt mode or registry name; the message lists the valid ones."""


def short_hash(text: str) -> str:
    """First 4 hex digits of sha256(text): the content tag in ids."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:4]


@dataclass(frozen=True)
class SystemMode:
    """A parsed system-prompt mode."""

    kind: str
    """One of template-default, empty, custom, as-user-prefix, text."""
    text: str | None
    """The system text the mode adds (None for template-default, "" for empty)."""
    prompt_name: str | None = None
    """Registry name for custom/as-user-prefix."""

    @property
    def name(self) -> str:
        return self.kind if self.prompt_name is None else f"{self.kind}:{self.prompt_name}"

    @property
    def id_part(self) -> str:
        """Human-readable and content-derived: the registry text's hash follows its name."""
        if self.kind == "text":  # free text has no name: a longer hash keeps distinct prompts apart
            return f"text-{hashlib.sha256(self.text.encode('utf-8')).hexdigest()[:12]}"
        return self.name if self.text in (None, "") else f"{self.name}-{short_hash(self.text)}"


def parse_system_mode(mode: str) -> SystemMode:
    """Parse a mode string; unknown modes or names raise SystemModeError listing the valid choices."""
    kind, _, prompt_name = mode.partition(":")
    if kind in ("template-default", "empty") and not prompt_name:
        return SystemMode(kind, None if kind == "template-default" else "")
    if kind == "text":
        if not prompt_name.strip():
            raise SystemModeError(f"system mode {mode!r} needs the system text after 'text:'")
        return SystemMode(kind, prompt_name)
    if kind in ("custom", "as-user-prefix"):
        if prompt_name not in SYSTEM_PROMPTS:
            raise SystemModeError(
                f"unknown system prompt {prompt_name!r} in mode {mode!r}; choose one of {', '.join(SYSTEM_PROMPTS)}"
            )
        return SystemMode(kind, SYSTEM_PROMPTS[prompt_name], prompt_name)
    raise SystemModeError(f"unknown system mode {mode!r}; use one of {', '.join(k + (':<name>' if k in ('custom', 'as-user-prefix') else '') for k in _KINDS)}")


def all_system_modes() -> list[str]:
    """Every mode: template-default, empty, then custom:* and as-user-prefix:* over the registry."""
    return ["template-default", "empty"] + [f"{k}:{n}" for k in ("custom", "as-user-prefix") for n in SYSTEM_PROMPTS]
