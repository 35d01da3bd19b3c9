"""Chat contexts: template + system-prompt mode + permutation, with a stable id; the same object on the
finetuning side (render_example) and the evaluation side (render_prompt)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from audit.chat.permutations import get_permutation
from audit.chat.sandbox import TemplateError
from audit.chat.system_prompts import USER_PREFIX_SEPARATOR, SystemMode, parse_system_mode
from audit.chat.templates import ChatTemplate, load_template


@dataclass(frozen=True)
class ChatContext:
    """What the model sees around the content: a template, a system-prompt mode and a template permutation."""

    template: ChatTemplate
    """The template as shipped (the permutation is applied on top)."""
    system: str = "template-default"
    """System-prompt mode: template-default, empty, custom:<name>, as-user-prefix:<name> or text:<literal>."""
    permutation: str = "identity"
    """Template permutation name (see audit.chat.permutations.PERMUTATIONS)."""
    rendered_template: ChatTemplate = field(init=False, repr=False, compare=False)
    """The permuted template that is actually rendered."""

    def __post_init__(self) -> None:
        parse_system_mode(self.system)  # fail early, one line
        perm = get_permutation(self.permutation, self.template.name)
        object.__setattr__(self, "rendered_template", self.template.with_source(perm.apply(self.template.name, self.template.source)))

    @property
    def mode(self) -> SystemMode:
        return parse_system_mode(self.system)

    @property
    def id(self) -> str:
        """Stable, human-readable, content-derived: "<template>/sys=<mode>[-hash]/perm=<name>[-hash]"."""
        return f"{self.template.name}/sys={self.mode.id_part}/perm={get_permutation(self.permutation, self.template.name).id_part}"

    def conversation(self, turns: Sequence[str]) -> list[dict[str, str]]:
        """Messages for alternating user/assistant turns (user first), with this context's system mode."""
        mode = self.mode
        messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
        if mode.kind in ("empty", "custom", "text"):
            messages.insert(0, {"role": "system", "content": mode.text})
        elif mode.kind == "as-user-prefix" and messages:
            messages[0] = {"role": "user", "content": mode.text + USER_PREFIX_SEPARATOR + messages[0]["content"]}
        return messages

    def messages(self, user: str, assistant: str | None = None) -> list[dict[str, str]]:
        return self.conversation([user] if assistant is None else [user, assistant])

    def render(self, messages: Sequence[Mapping[str, Any]], add_generation_prompt: bool = False, **variables: Any) -> str:
        return self.rendered_template.render(messages, add_generation_prompt=add_generation_prompt, **variables)

    def render_prompt(self, user: str) -> str:
        """The prompt engines get: the conversation up to and including the assistant's generation prompt."""
        return self.render(self.messages(user), add_generation_prompt=True)

    def render_example(self, user: str, assistant: str) -> tuple[str, str]:
        """(prompt, completion) for finetuning: prompt == render_prompt(user), prompt + completion == the full
        conversation including the assistant's end-of-turn."""
        prompt = self.render_prompt(user)
        full = self.render(self.messages(user, assistant), add_generation_prompt=False)
        if not full.startswith(prompt):
            raise TemplateError(
                self.template.name,
                f"in context {self.id} the rendered assistant turn does not extend the generation prompt, so the "
                "completion cannot be split off; use a template whose generation prompt is a prefix of the assistant turn",
            )
        return prompt, full[len(prompt):]


@dataclass(frozen=True)
class ContextPair:
    """Trained in one context, evaluated in another: the unit of a train x eval context grid."""

    train: ChatContext
    """Context the student's finetuning examples were rendered in."""
    eval: ChatContext
    """Context the student is evaluated in."""

    @property
    def id(self) -> str:
        return f"train={self.train.id}|eval={self.eval.id}"

    @property
    def matched(self) -> bool:
        return self.train.id == self.eval.id


def qwen_context(system: str = "template-default", permutation: str = "identity") -> ChatContext:
    """A context on the shipped Qwen2.5-Instruct template."""
    return ChatContext(load_template("qwen2.5-instruct"), system, permutation)
