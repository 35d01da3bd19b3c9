"""Render untrusted chat-template source in jinja2's immutable sandbox, with a time and size budget.

Chat templates are code written by others. The sandbox refuses access to Python internals; on top of it
we stop templates that loop or grow without bound: a deadline checked on every line the compiled template
executes (a thread-local trace limited to template frames), a cap on the rendered size checked while
streaming, and a cap on strings/lists built by `+`, `*` and `**`, which would otherwise allocate before any
line check could run.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

TEMPLATE_FILENAME = "<chat-template>"


class TemplateError(Exception):
    """A chat template failed to compile or render; the message is one line naming the template."""

    def __init__(self, template_name: str, reason: str) -> None:
        self.template_name = template_name
        self.reason = " ".join(str(reason).split())
        super().__init__(f"chat template {template_name!r}: {self.reason}")


class TemplateRejected(TemplateError):
    """The template itself called raise_exception: it does not support this conversation layout."""


@dataclass(frozen=True)
class RenderLimits:
    """Budget for one render of an untrusted template."""

    max_seconds: float = 0.5
    """Wall-clock budget, checked on every executed template line."""
    max_chars: int = 1_000_000
    """Largest rendered prompt (and largest intermediate string or list) accepted, in characters/items."""
    max_power_bits: int = 4096
    """Largest integer result of `**`; bigger powers are refused before they are computed."""


DEFAULT_LIMITS = RenderLimits()


class _Exhausted(Exception):
    """Internal: the render ran past a budget."""


class _RejectedByTemplate(Exception):
    """Internal: raise_exception() was called by the template."""


def _raise_exception(message: str) -> None:
    raise _RejectedByTemplate(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # Same semantics as transformers' override: no HTML escaping, indent/separators allowed.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size checks on the operators that can allocate without bound."""

    intercepted_binops = frozenset({"+", "*", "**"})

    def __init__(self, limits: RenderLimits) -> None:
        # trim_blocks/lstrip_blocks/loopcontrols: the settings transformers' apply_chat_template uses.
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
        self.limits = limits
        self.filters["tojson"] = _tojson
        self.globals["raise_exception"] = _raise_exception

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that prints as ""; an explicit refusal is clearer.
        raise jinja2.exceptions.SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is unsafe")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0:
                if abs(left) > 1 and right * max(abs(left).bit_length(), 1) > self.limits.max_power_bits:
                    raise _Exhausted(f"integer power {left}**{right} is too large")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, list, tuple)) and isinstance(count, int):
                    if len(seq) * count > self.limits.max_chars:
                        raise _Exhausted(f"repetition builds more than {self.limits.max_chars} items")
        elif operator == "+":
            if isinstance(left, (str, list, tuple)) and isinstance(right, (str, list, tuple)):
                if len(left) + len(right) > self.limits.max_chars:
                    raise _Exhausted(f"concatenation builds more than {self.limits.max_chars} items")
        return super().call_binop(context, operator, left, right)


_ENVIRONMENTS: dict[RenderLimits, _BoundedSandbox] = {}


def _environment(limits: RenderLimits) -> _BoundedSandbox:
    if limits not in _ENVIRONMENTS:
        _ENVIRONMENTS[limits] = _BoundedSandbox(limits)
    return _ENVIRONMENTS[limits]


def compile_template(name: str, source: str, limits: RenderLimits = DEFAULT_LIMITS) -> jinja2.Template:
    """Compile `source` in the sandbox; a syntax error becomes a TemplateError naming `name`."""
    try:
        env = _environment(limits)
        code = env.compile(source, name=name, filename=TEMPLATE_FILENAME)
        return env.template_class.from_code(env, code, env.make_globals(None))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(name, f"syntax error at line {exc.lineno}: {exc.message}; fix the template source") from None
    except _Exhausted as exc:  # constant folding of huge literals happens at compile time
        raise TemplateError(name, f"refused: {exc}") from None


class _Deadline:
    """A trace function that raises _Exhausted once the clock passes `deadline`, in template frames only."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise _Exhausted(f"render exceeded its time budget of {self.seconds:g} s (a loop that does not end?)")

    def global_trace(self, frame, event, arg):
        if frame.f_code.co_filename == TEMPLATE_FILENAME:
            self.check()
            return self.local_trace
        return None

    def local_trace(self, frame, event, arg):
        if event == "line":
            self.check()
        return self.local_trace


def render_compiled(
    name: str,
    template: jinja2.Template,
    variables: Mapping[str, Any],
    limits: RenderLimits = DEFAULT_LIMITS,
) -> str:
    """Render a compiled template within `limits`; every failure is a one-line TemplateError naming `name`."""
    deadline = _Deadline(limits.max_seconds)
    chunks: list[str] = []
    size = 0
    previous_trace = sys.gettrace()
    sys.settrace(deadline.global_trace)
    try:
        for chunk in template.generate(**variables):
            size += len(chunk)
            if size > limits.max_chars:
                raise _Exhausted(f"rendered output exceeds {limits.max_chars} characters")
            deadline.check()
            chunks.append(chunk)
    except _RejectedByTemplate as exc:
        raise TemplateRejected(name, f"rejects this conversation: {exc}") from None
    except _Exhausted as exc:
        raise TemplateError(name, f"stopped: {exc}") from None
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateError(name, f"refused by the sandbox: {exc}") from None
    except jinja2.TemplateError as exc:
        raise TemplateError(name, f"{type(exc).__name__}: {exc}") from None
    except (RecursionError, MemoryError) as exc:
        raise TemplateError(name, f"stopped: {type(exc).__name__}") from None
    except Exception as exc:  # template code is foreign; any Python error is a template error
        raise TemplateError(name, f"{type(exc).__name__}: {exc}") from None
    finally:
        sys.settrace(previous_trace)
    return "".join(chunks)
