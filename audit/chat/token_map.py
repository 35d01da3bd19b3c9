"""Token maps: which token positions of a rendered prompt are system prompt, template, user or assistant content.

Content spans are found exactly by rendering the conversation once more with private-use placeholders as
contents (templates pass them through), then substituting the real contents back and checking the result
equals the real rendering. Injected default system prompts are searched only in the template text, so user
content can never be mistaken for them. Tokens are then assigned from fast-tokenizer offsets.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from audit.chat.context import ChatContext
from audit.chat.permutations import permuted_default_prompts
from audit.chat.sandbox import TemplateError
from audit.chat.system_prompts import USER_PREFIX_SEPARATOR

KINDS = ("system", "template", "user", "assistant")
_PLACEHOLDER = re.compile("\ue000(\\d+)\ue001")


class TokenMapError(TemplateError):
    """A token map cannot be built (slow tokenizer, content transformed by the template, unknown entity)."""


@dataclass(frozen=True)
class Span:
    kind: str
    """system, user or assistant."""
    start: int
    end: int


def content_spans(context: ChatContext, turns: Sequence[str], add_generation_prompt: bool) -> tuple[str, tuple[Span, ...]]:
    """The rendered conversation and the character spans of its system, user and assistant contents."""
    mode = context.mode
    pieces: list[tuple[str, str]] = []  # (kind, text) per placeholder index

    def hold(kind: str, text: str) -> str:
        pieces.append((kind, text))
        return f"\ue000{len(pieces) - 1}\ue001"

    held_turns = [hold("user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(turns)]
    if mode.kind == "as-user-prefix" and held_turns:
        held_turns[0] = hold("system", mode.text) + USER_PREFIX_SEPARATOR + held_turns[0]
        skeleton_messages = context.conversation([])
        skeleton_messages += [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(held_turns)]
    else:
        skeleton_messages = context.conversation(held_turns)
        if mode.kind in ("empty", "custom"):
            skeleton_messages[0] = {"role": "system", "content": hold("system", mode.text)}
    skeleton = context.render(skeleton_messages, add_generation_prompt=add_generation_prompt)
    expected = context.render(context.conversation(list(turns)), add_generation_prompt=add_generation_prompt)

    defaults = [d for d in permuted_default_prompts(context.permutation) if d]
    for strip in (False, True):  # templates that trim contents render the stripped text
        text, spans, cursor = [], [], 0
        for i, part in enumerate(_PLACEHOLDER.split(skeleton)):
            if i % 2 == 0:  # template text: may carry an injected default system prompt
                for default in defaults:
                    at = part.find(default)
                    if at >= 0:
                        spans.append(Span("system", cursor + at, cursor + at + len(default)))
                text.append(part)
                cursor += len(part)
            else:
                kind, content = pieces[int(part)]
                content = content.strip() if strip else content
                if content:
                    spans.append(Span(kind, cursor, cursor + len(content)))
                text.append(content)
                cursor += len(content)
        if "".join(text) == expected:
            return expected, tuple(sorted(spans, key=lambda s: s.start))
    raise TokenMapError(context.template.name, f"in context {context.id} the template rewrites message contents, so their positions are unknown")


@dataclass(frozen=True)
class TokenMap:
    """Token positions of one rendered, tokenized prompt, by what they carry."""

    text: str
    """The rendered text that was tokenized."""
    token_ids: tuple[int, ...]
    offsets: tuple[tuple[int, int], ...]
    """Character span of each token in `text`."""
    spans: tuple[Span, ...]
    """Character spans of system, user and assistant content."""
    kinds: tuple[str, ...]
    """Kind of each token: system, template, user or assistant."""
    context_id: str = ""

    def _positions(self, kind: str) -> tuple[int, ...]:
        return tuple(i for i, k in enumerate(self.kinds) if k == kind)

    @property
    def system(self) -> tuple[int, ...]:
        return self._positions("system")

    @property
    def template(self) -> tuple[int, ...]:
        return self._positions("template")

    @property
    def user(self) -> tuple[int, ...]:
        return self._positions("user")

    @property
    def assistant(self) -> tuple[int, ...]:
        return self._positions("assistant")

    def entity(self, text: str) -> tuple[int, ...]:
        """Positions of tokens overlapping occurrences of `text` in the system prompt (e.g. " Q", "wen" for "Qwen")."""
        hits: set[int] = set()
        for span in self.spans:
            if span.kind != "system":
                continue
            for match in re.finditer(re.escape(text), self.text[span.start:span.end]):
                a, b = span.start + match.start(), span.start + match.end()
                hits.update(i for i, (s, e) in enumerate(self.offsets) if s < b and e > a)
        if not hits:
            raise TokenMapError(self.context_id.split("/")[0] or "?", f"entity {text!r} does not occur in the system prompt of context {self.context_id}")
        return tuple(sorted(hits))


def _kind_of(start: int, end: int, spans: Sequence[Span]) -> str:
    # A token belongs to the first content span it overlaps; tokens of pure template text are "template".
    for span in spans:
        if start < span.end and end > span.start:
            return span.kind
    return "template"


def token_map(tokenizer: Any, context: ChatContext, user: str, assistant: str | None = None) -> TokenMap:
    """Map tokens of render_prompt(user), or of the full conversation when `assistant` is given."""
    if not getattr(tokenizer, "is_fast", False):
        raise TokenMapError(context.template.name, "token maps need a fast tokenizer (offsets); load it with use_fast=True")
    turns = [user] if assistant is None else [user, assistant]
    text, spans = content_spans(context, turns, add_generation_prompt=assistant is None)
    encoding = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = tuple((int(s), int(e)) for s, e in encoding["offset_mapping"])
    kinds = tuple(_kind_of(s, e, spans) for s, e in offsets)
    return TokenMap(text, tuple(encoding["input_ids"]), offsets, spans, kinds, context.id)
