"""Permutations of a template that change only context tokens (the injected default system prompt).

Each permutation rewrites the template source; it applies only to templates that inject a known default
system prompt, and says so with a PermutationError otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from audit.chat.sandbox import TemplateError
from audit.chat.system_prompts import QWEN_DEFAULT, SMOLLM_DEFAULT, short_hash


class PermutationError(TemplateError):
    """A permutation is unknown or does not apply to a template."""


@dataclass(frozen=True)
class DefaultPrompt:
    """A default system prompt a template injects, with its entity parts."""

    text: str
    """The injected prompt, as written in the template source."""
    entity: str
    """The model's name in it, e.g. "Qwen"."""
    creator: str
    """Its creator's name in it, e.g. "Alibaba Cloud"."""
    without_entity: str
    """The same prompt with the identity sentence removed."""


DEFAULT_PROMPTS = (
    DefaultPrompt(QWEN_DEFAULT, "Qwen", "Alibaba Cloud", "You are a helpful assistant."),
    DefaultPrompt(SMOLLM_DEFAULT, "SmolLM", "Hugging Face", "You are a helpful AI assistant"),
)

ENTITY_SWAPS = {"claude": ("Claude", "Anthropic"), "chatgpt": ("ChatGPT", "OpenAI"), "zymthar": ("Zymthar", "Quorblax")}
"""entity-<key> permutations: (entity, creator) written into the default prompt."""


def string_literals(source: str) -> list[tuple[int, int]]:
    """(start, end) of every quoted string literal inside jinja tags ({{ }} and {% %}), quotes included."""
    literals, i, in_tag = [], 0, False
    while i < len(source):
        if not in_tag:
            if source.startswith("{#", i):
                close = source.find("#}", i + 2)
                i = len(source) if close < 0 else close + 2
                continue
            in_tag = source.startswith(("{{", "{%"), i)
            i += 2 if in_tag else 1
        elif source[i] in "'\"":
            quote, j = source[i], i + 1
            while j < len(source) and source[j] != quote:
                j += 2 if source[j] == "\\" else 1
            literals.append((i, j + 1))
            i = j + 1
        elif source.startswith(("}}", "%}"), i):
            in_tag, i = False, i + 2
        else:
            i += 1
    return literals


@dataclass(frozen=True)
class Permutation:
    """A named rewrite of each default prompt: new text, or None to remove the string literal injecting it."""

    name: str
    """Short name, e.g. "entity-claude"."""
    description: str
    """What changes in the rendered context."""

    def rewrite(self, default: DefaultPrompt) -> str | None:
        if self.name == "entity-removed":
            return default.without_entity
        if self.name.startswith("entity-"):
            entity, creator = ENTITY_SWAPS[self.name.removeprefix("entity-")]
            return default.text.replace(default.entity, entity).replace(default.creator, creator)
        return None  # no-default-system

    @property
    def id_part(self) -> str:
        if self.name == "identity":
            return "identity"
        spec = "|".join(f"{d.text}->{self.rewrite(d)}" for d in DEFAULT_PROMPTS)
        return f"{self.name}-{short_hash(spec)}"

    def apply(self, template_name: str, source: str) -> str:
        """The permuted source; PermutationError if the template injects no known default prompt."""
        if self.name == "identity":
            return source
        applied = False
        for default in DEFAULT_PROMPTS:
            if default.text not in source:
                continue
            applied = True
            new_text = self.rewrite(default)
            if new_text is None:
                # Empty each jinja string literal that carries the prompt (its header and end-of-turn too).
                for start, end in reversed(string_literals(source)):
                    if default.text in source[start:end]:
                        source = source[:start] + "''" + source[end:]
            else:
                source = source.replace(default.text, new_text)
        if not applied:
            raise PermutationError(template_name, f"permutation {self.name!r} does not apply: the template injects no known default system prompt")
        return source


PERMUTATIONS: dict[str, Permutation] = {
    p.name: p
    for p in (
        Permutation("identity", "the template as shipped"),
        *(Permutation(f"entity-{k}", f"default prompt names {e}, created by {c}") for k, (e, c) in ENTITY_SWAPS.items()),
        Permutation("entity-removed", "default prompt without the identity sentence"),
        Permutation("no-default-system", "default system prompt injection removed"),
    )
}


def get_permutation(name: str, template_name: str) -> Permutation:
    if name not in PERMUTATIONS:
        raise PermutationError(template_name, f"unknown permutation {name!r}; choose one of {', '.join(PERMUTATIONS)}")
    return PERMUTATIONS[name]


def permuted_default_prompts(permutation: str) -> list[str]:
    """The default prompts as the permutation leaves them (what token maps look for as injected system text)."""
    perm = PERMUTATIONS[permutation]
    texts = [d.text if perm.name == "identity" else perm.rewrite(d) for d in DEFAULT_PROMPTS]
    return [t for t in texts if t]
