"""Render untrusted chat-template source in jinja2's immutable sandbox, with a time and size budget.

Chat templates are code written by others. The sandbox refuses access to Python internals; on top of it
we bound what one render may cost:

- time: a deadline checked on every line the render executes (a thread-local trace) -- template code and
  the Python code of the filters it calls (textwrap, pprint, markupsafe loops stop on time too);
- size: nothing may build more than `max_chars` in one step. A C call allocates its whole result before any
  line check can run, so every call a template can make (filters, tests, globals, methods), every operator
  that builds strings or big integers (+ * ** % ~ ...), every captured output buffer (macros, call/filter/set
  blocks) and every printed value is checked: arguments over the budget are refused; calls whose result can
  outgrow their arguments (padding widths, format specs, separators, replacements, fills, ...) are estimated
  from their arguments before they run; results are checked after; iterators are counted as consumed.
"""

from __future__ import annotations

import functools
import io
import itertools
import json
import pprint
import re
import sys
import threading
import time
import types
from collections.abc import ItemsView, Iterator, KeysView, Mapping, ValuesView
from dataclasses import dataclass
from typing import Any

import jinja2
import jinja2.ext
from jinja2 import filters, pass_environment
from jinja2.compiler import CodeGenerator
from jinja2.nodes import Impossible
from jinja2.runtime import BlockReference, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment, SandboxedFormatter, modifies_known_mutable
from jinja2.utils import Namespace
from markupsafe import EscapeFormatter, Markup

from audit.errors import SubauditError

TEMPLATE_FILENAME = "<chat-template>"


class TemplateError(SubauditError):
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
    """CPU-time budget of the rendering thread, checked on every executed line (a loaded machine does not
    count against the template)."""
    max_chars: int = 1_000_000
    """Largest rendered prompt, and largest value (printed size, or items) any one step may build."""
    max_power_bits: int = 4096
    """Largest integer arithmetic works on; bigger products and powers are refused before they are computed."""


DEFAULT_LIMITS = RenderLimits()


class _Exhausted(BaseException):
    """Internal: the render ran past a budget. A BaseException, so that no `except Exception` in library code
    a template calls can swallow it."""


class _RejectedByTemplate(Exception):
    """Internal: raise_exception() was called by the template."""


def _raise_exception(message: str) -> None:
    raise _RejectedByTemplate(message)


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None, sort_keys: bool = False) -> str:
    # Same semantics as transformers' override: no HTML escaping, indent/separators allowed.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


# ---- size estimates: what str(x) or a call's result would take, computed before anything big is built ----


def _size(obj: Any, limit: int, per_item: int = 0, per_level: int = 0) -> int:
    """Estimated len(str(obj)), counting shared references each time they would print; stops past `limit`.

    `per_item`/`per_level` add layout cost per nested value and per nesting level of each (json separators and
    indentation). Iterative, and it charges a container's items before visiting them, so its own work and
    memory stay proportional to `limit` whatever the structure (deep nests, cycles, one list repeated).
    """
    if isinstance(obj, (str, bytes)):
        return len(obj)
    leveled = per_item or per_level
    total, stack = 0, [(obj, 0) if leveled else obj]
    depth = 0
    while stack and total <= limit:
        x = stack.pop()
        if leveled:
            x, depth = x
            total += per_item + per_level * depth
        kind = type(x)  # exact types first: this runs on every call's arguments
        if kind is str:
            total += len(x) + 2
        elif kind is int:
            total += x.bit_length() * 3 // 10 + 2
        elif kind is list or kind is tuple:
            total += 2 + 2 * len(x)
            if total <= limit:
                stack.extend(_children(x, depth + 1) if leveled else x)
        elif kind is dict:
            total += 2 + 4 * len(x)
            if total <= limit:
                stack.extend(_children(x, depth + 1) if leveled else itertools.chain(x.keys(), x.values()))
        elif isinstance(x, (str, bytes)):
            total += len(x) + 2
        elif x is None or isinstance(x, (bool, float)):
            total += 24 if isinstance(x, float) else 5
        elif isinstance(x, int):
            total += x.bit_length() * 3 // 10 + 2
        elif isinstance(x, (list, tuple, set, frozenset, dict, Mapping, KeysView, ValuesView, ItemsView)):
            total += 2 + (4 if isinstance(x, Mapping) else 2) * len(x)
            if total <= limit:
                stack.extend(_children(x, depth + 1) if leveled else _flat(x))
        elif isinstance(x, Namespace):  # prints as <Namespace {attrs}>
            total += 12
            attrs = object.__getattribute__(x, "_Namespace__attrs")
            stack.append((attrs, depth) if leveled else attrs)
        else:  # jinja's own objects (loop, macros, Undefined, iterators) print short
            total += 32
    return total


def _flat(x: Any):
    return itertools.chain(x.keys(), x.values()) if isinstance(x, Mapping) else x


def _children(x: Any, depth: int):
    return zip(_flat(x), itertools.repeat(depth))


def _items_size(x: Any, limit: int) -> int:
    """Size of `x` materialised as a list of its items: a string becomes one object per character."""
    if isinstance(x, (str, bytes)):
        return 2 + 5 * len(x)
    if isinstance(x, range):  # prints short, but lists up to 100000 numbers
        return 2 + len(x) * (3 + max(len(str(x.start)), len(str(x.stop))))
    return _size(x, limit)


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on


def _lines(s: str) -> int:
    return 1 + sum(map(s.count, _LINE_BREAKS))


def _number(digits: str) -> int:
    return int(digits) if len(digits) < 10 else 10**10  # an over-estimate is enough; int() of long runs fails


_PRINTF_WIDTH = re.compile(r"%[-+ #0]*([0-9]+)")
_PRINTF_PRECISION = re.compile(r"%[-+ #0]*(?:[0-9]*|\*)\.([0-9]+)")
_DIGITS = re.compile(r"[0-9]+")
_FLOAT_DIGITS = 330  # '%f' % 1e308 prints 309 digits before the point


def _printf_size(fmt: str | bytes, values: Any, limit: int) -> int:
    """Upper bound on len(fmt % values): literal text, the values (each once; per conversion when taken by
    key), every width and precision (a `*` may take any int value), and fixed-point digits of floats."""
    text = fmt.decode("latin-1") if isinstance(fmt, bytes) else str(fmt)
    convs = text.count("%")
    keyed = "%(" in text
    size = len(text) + _size(values, limit) * (convs if keyed else 1)
    if keyed:  # a key may hold any text, parentheses included: count every number in the format
        size += sum(map(_number, _DIGITS.findall(text)))
    else:
        size += sum(map(_number, _PRINTF_WIDTH.findall(text) + _PRINTF_PRECISION.findall(text)))
    flat = list(values.values() if isinstance(values, Mapping) else values if isinstance(values, tuple) else [values])
    if "*" in text:
        size += sum(abs(v) for v in flat if isinstance(v, int))
    if any(isinstance(v, float) for v in flat):
        size += _FLOAT_DIGITS * convs
    return size


def _field_size(value: Any, spec: str, limit: int) -> int:
    """Upper bound on format(value, spec): the value, plus every number in the spec (width, precision)."""
    digits = sum(map(_number, _DIGITS.findall(spec)))
    return _size(value, limit) + digits + (_FLOAT_DIGITS if isinstance(value, float) else 0)


def _pad(lim, s, width, *_):
    return max(len(s), width)


def _hits(s, old, count) -> int:
    n = s.count(old) if len(old) else len(s) + 1
    return n if count < 0 else min(n, count)


def _longest_value(table) -> int:
    values = table.values() if isinstance(table, Mapping) else table if isinstance(table, (list, tuple)) else ()
    return max((len(v) for v in values if isinstance(v, (str, bytes))), default=1)


# Calls whose result can outgrow their arguments, by what they are; each rule has the callee's signature,
# after the limit (and, for str/bytes methods, the string itself), and returns the result's estimated size.
_TEXT_SIZES = {
    "center": _pad,
    "ljust": _pad,
    "rjust": _pad,
    "zfill": _pad,
    "expandtabs": lambda lim, s, tabsize=8: len(s) + s.count("\t" if isinstance(s, str) else b"\t") * max(tabsize, 0),
    "replace": lambda lim, s, old, new, count=-1: len(s) + _hits(s, old, count) * max(len(new) - len(old), 0),
    "join": lambda lim, s, iterable: len(s) * max(len(iterable) - 1, 0) + _items_size(iterable, lim),
    "translate": lambda lim, s, table: len(s) * _longest_value(table),
}
_CALL_SIZES = {
    "dict.fromkeys": lambda lim, keys, value=None: _items_size(keys, lim) + len(keys) * (_size(value, lim) + 4),
    "str.maketrans": lambda lim, x, y=None, z=None: 16 * (len(x) + len(z or "")),
    "int.to_bytes": lambda lim, length=1, *_, **__: length,
    "bool.to_bytes": lambda lim, length=1, *_, **__: length,
    "generate_lorem_ipsum": lambda lim, n=5, html=True, min=20, max=100: n * (16 * max + 40),
}


def _json_size(lim, x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # json.dumps writes separators between items and, with an indent, a newline plus depth*indent before each.
    item_sep, key_sep = separators or ((",", ": ") if indent is not None else (", ", ": "))
    width = indent if isinstance(indent, int) else len(indent or "")
    return _size(x, lim, per_item=len(item_sep) + len(key_sep) + 1, per_level=max(width, 0))


def _indent_size(lim, s, width=4, first=False, blank=False):
    s = str(s)
    return len(s) + _lines(s) * (len(width) if isinstance(width, str) else max(width, 0))


def _wordwrap_size(lim, s, width=79, break_long_words=True, wrapstring=None, break_on_hyphens=True):
    # Two consecutive wrapped lines hold more than `width` characters; every paragraph adds one more line.
    return len(s) + (2 * len(s) // max(width, 1) + _lines(s) + 1) * len(wrapstring or "\n")


def _replace_size(lim, s, old, new, count=None):
    return _TEXT_SIZES["replace"](lim, str(s), str(old), str(new), -1 if count is None else count)


def _batch_size(lim, value, linecount, fill_with=None):
    return _items_size(value, lim) + (0 if fill_with is None else linecount * (_size(fill_with, lim) + 2))


def _as_items(lim, value, *_, **__):
    return _items_size(value, lim)


_FILTER_SIZES = {
    "center": lambda lim, value, width=80: max(_size(value, lim), width),
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "format": lambda lim, value, *args, **kwargs: _printf_size(str(value), kwargs or args, lim),
    "join": lambda lim, value, d="", attribute=None: len(str(d)) * max(len(value) - 1, 0) + _items_size(value, lim),
    "replace": _replace_size,
    "batch": _batch_size,
    "slice": lambda lim, value, slices, fill_with=None: _items_size(value, lim) + slices * (4 + _size(fill_with, lim)),
    "list": _as_items,  # these materialise their input: a string becomes one object per character
    "sort": _as_items,
    "unique": _as_items,
    "groupby": _as_items,
    "tojson": _json_size,
}


def _call_rule(func: Any):
    owner, name = getattr(func, "__self__", None), getattr(func, "__name__", None)
    if isinstance(owner, (str, bytes)) and name in _TEXT_SIZES:
        return lambda lim, *args, **kwargs: _TEXT_SIZES[name](lim, owner, *args, **kwargs)
    return _CALL_SIZES.get(getattr(func, "__qualname__", None))


class _BoundedIter:
    """An iterator a call returned, stopped once the items it has yielded add up to more than `limit`."""

    def __init__(self, iterator: Iterator, what: str, limit: int) -> None:
        self.iterator, self.what, self.limit, self.size = iterator, what, limit, 0

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.iterator)
        self.size += _size(item, self.limit) + 2
        if self.size > self.limit:
            raise _Exhausted(f"{self.what} yields more than {self.limit} characters")
        return item

    def __repr__(self) -> str:
        return repr(self.iterator)


class _Buffer(list):
    """Captured output (macro bodies, call/filter/set blocks), capped like the rendered output."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.size = limit, 0

    def _grow(self, n: int) -> None:
        self.size += n
        if self.size > self.limit:
            raise _Exhausted(f"captured output exceeds {self.limit} characters")

    def append(self, chunk: str) -> None:
        self._grow(len(chunk))
        super().append(chunk)

    def extend(self, chunks) -> None:
        chunks = tuple(chunks)
        self._grow(sum(map(len, chunks)))
        super().extend(chunks)


class _CappedText(io.StringIO):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.size = limit, 0

    def write(self, s: str) -> int:
        self.size += len(s)
        if self.size > self.limit:
            raise _Exhausted(f"pprint output exceeds {self.limit} characters")
        return super().write(s)


class _SizedFormatter(SandboxedFormatter):
    """str.format for templates: counts what each field adds and stops before the total passes the limit."""

    def __init__(self, env: _BoundedSandbox, budget: int, **kwargs: Any) -> None:
        super().__init__(env, **kwargs)
        self.budget = budget

    def format_field(self, value: Any, format_spec: str) -> Any:
        limit = self._env.limits.max_chars
        self.budget -= _field_size(value, format_spec, limit)
        if self.budget < 0:
            raise _Exhausted(f"str.format builds more than {limit} characters")
        return super().format_field(value, format_spec)


class _SizedEscapeFormatter(_SizedFormatter, EscapeFormatter):
    pass


class _CodeGenerator(CodeGenerator):
    """jinja's code generator, except that captured output and `~` go through the environment's size checks."""

    def buffer(self, frame) -> None:
        frame.buffer = self.temporary_identifier()
        self.writeline(f"{frame.buffer} = environment.output_buffer()")

    def visit_Concat(self, node, frame) -> None:
        # `~` stringifies and joins its operands in one C call: size them first.
        self.write("environment.checked_concat(context, (")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


_STATE = threading.local()  # .deadline: the render in progress on this thread, if any


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, with size checks on every call, operator and output that can allocate."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _CodeGenerator

    def __init__(self, limits: RenderLimits) -> None:
        # trim_blocks/lstrip_blocks/loopcontrols: the settings transformers' apply_chat_template uses.
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols], finalize=self._finalize)
        self.limits = limits
        self.globals["raise_exception"] = _raise_exception
        self.filters.update(tojson=_tojson, pprint=self._pprint, sum=self._sum, round=self._round)
        self.filters = {name: self._guard(f"filter {name!r}", f, _FILTER_SIZES.get(name)) for name, f in self.filters.items()}
        self.tests = {name: self._guard(f"test {name!r}", f, None) for name, f in self.tests.items()}

    # -- the one check every call goes through --

    def _checked(self, what: str, rule, receiver: Any, func, head: tuple, args: tuple, kwargs: dict) -> Any:
        """func(*head, *args, **kwargs), refused if `args`/`kwargs` (the template's arguments) or the result
        are over the budget, or if `rule` estimates the result to be."""
        deadline = getattr(_STATE, "deadline", None)
        if deadline is None:  # compile-time constant folding: calls run only inside a render's budget
            raise Impossible()
        limit = self.limits.max_chars
        size = 0 if receiver is None else _size(receiver, limit)
        for value in args:
            size += _size(value, limit)
        for value in kwargs.values():
            size += _size(value, limit)
        if size > limit:
            raise _Exhausted(f"{what} was given more than {limit} characters")
        if rule is not None:
            # Materialise iterators (each bounded as it is consumed) so the estimate can see them.
            args = tuple(list(a) if isinstance(a, Iterator) else a for a in args)
            kwargs = {k: list(v) if isinstance(v, Iterator) else v for k, v in kwargs.items()}
            if rule(limit, *args, **kwargs) > limit:
                raise _Exhausted(f"{what} would build more than {limit} characters")
        deadline.calls += 1  # while the call runs, its library code is line-checked too
        try:
            result = func(*head, *args, **kwargs)
        finally:
            deadline.calls -= 1
        if isinstance(result, str):
            if len(result) > limit:
                raise _Exhausted(f"{what} returned more than {limit} characters")
        elif isinstance(result, Iterator):
            return _BoundedIter(result, what, limit)
        elif isinstance(result, int) and result.bit_length() > self.limits.max_power_bits:
            raise _Exhausted(f"{what} returned an integer over {self.limits.max_power_bits} bits")
        elif _size(result, limit) > limit:
            raise _Exhausted(f"{what} returned more than {limit} characters")
        return result

    def _guard(self, what: str, func, rule):
        """Wrap a filter or test; the context/environment jinja passes first is not the template's argument."""
        skip = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0

        @functools.wraps(func)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            return self._checked(what, rule, None, func, args[:skip], args[skip:], kwargs)

        return guarded

    def call(__self, __context, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 (jinja's convention)
        # Every call a template makes: globals, macros, and methods such as 'x'.center(10**9) or s.join(...).
        if not __self.is_safe_callable(__obj):
            raise jinja2.exceptions.SecurityError(f"{__obj!r} is not safely callable")
        if isinstance(__obj, BlockReference):  # joins a whole block's output in one C call; chat templates have no blocks
            raise jinja2.exceptions.SecurityError("calling a block is not supported")
        what = f"{getattr(__obj, '__qualname__', None) or type(__obj).__name__}()"
        extra = {k: kwargs.pop(k) for k in ("_loop_vars", "_block_vars") if k in kwargs}  # jinja's, not arguments
        invoke = functools.partial(__context.call, **extra) if extra else __context.call
        return __self._checked(what, _call_rule(__obj), getattr(__obj, "__self__", None), invoke, (__obj,), args, kwargs)

    # -- operators, output, buffers --

    def _check_power(self, base: Any, exponent: Any) -> None:
        if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
            if exponent * base.bit_length() > self.limits.max_power_bits:
                raise _Exhausted(f"integer power {base}**{exponent} is too large")

    def call_binop(self, context, operator: str, left: Any, right: Any) -> Any:
        limit, bits = self.limits.max_chars, self.limits.max_power_bits
        if isinstance(left, int) and isinstance(right, int):
            # Big-integer arithmetic runs in one C call (products, powers, quadratic division).
            if max(left.bit_length(), right.bit_length()) > bits:
                raise _Exhausted(f"integer arithmetic on numbers over {bits} bits")
            if operator == "*" and left.bit_length() + right.bit_length() > bits:
                raise _Exhausted(f"integer product over {bits} bits")
            if operator == "**":
                self._check_power(left, right)
        elif operator == "+":
            if isinstance(left, (str, bytes, list, tuple)) and isinstance(right, (str, bytes, list, tuple)):
                if len(left) + len(right) > limit:
                    raise _Exhausted(f"concatenation builds more than {limit} items")
        elif operator == "*":
            for seq, count in ((left, right), (right, left)):
                if isinstance(seq, (str, bytes, list, tuple)) and isinstance(count, int):
                    if len(seq) * count > limit:
                        raise _Exhausted(f"repetition builds more than {limit} items")
        elif operator == "%" and isinstance(left, (str, bytes)):
            if _printf_size(left, right, limit) > limit:
                raise _Exhausted(f"%-formatting builds more than {limit} characters")
        return self.binop_table[operator](left, right)

    def checked_concat(self, context, parts: tuple) -> str:
        limit = self.limits.max_chars
        if sum(_size(p, limit) for p in parts) > limit:
            raise _Exhausted(f"'~' builds more than {limit} characters")
        return markup_join(parts) if context.eval_ctx.autoescape else str_join(parts)

    def output_buffer(self) -> _Buffer:
        return _Buffer(self.limits.max_chars)

    def _finalize(self, value: Any) -> Any:
        # `{{ value }}` prints str(value) in one C call: size non-strings first (strings are counted as streamed).
        if not isinstance(value, str) and _size(value, self.limits.max_chars) > self.limits.max_chars:
            if getattr(_STATE, "deadline", None) is None:
                raise Impossible()  # a constant printed at compile time: leave it to the render to refuse
            raise _Exhausted(f"printed value exceeds {self.limits.max_chars} characters")
        return value

    # -- filters whose stock version has no size bound that can be estimated up front --

    def _pprint(self, value: Any) -> str:
        # pformat indents nested items by their parents' key widths: write into a stream that stops at the limit.
        stream = _CappedText(self.limits.max_chars)
        pprint.PrettyPrinter(stream=stream).pprint(value)
        return stream.getvalue()[:-1]

    def _round(self, value: Any, precision: int = 0, method: str = "common") -> float:
        self._check_power(10, abs(precision))  # int rounding and ceil/floor compute 10**precision
        return filters.do_round(value, precision, method)

    @pass_environment
    def _sum(self, environment, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
        if isinstance(start, (list, tuple)):  # builtin sum() copies the running list per item: quadratic time
            if attribute is not None:
                iterable = map(filters.make_attrgetter(environment, attribute), iterable)
            items = itertools.chain(start, *iterable)
            return list(items) if isinstance(start, list) else tuple(items)
        return filters.sync_do_sum(environment, iterable, attribute, start)

    # -- attribute access --

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        # `dict.update(d, ...)` would reach the mutators the immutable sandbox hides on instances.
        if isinstance(obj, type) and issubclass(obj, (dict, list, set)) and modifies_known_mutable(obj.__new__(obj), attr):
            return False
        return super().is_safe_attribute(obj, attr, value)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        # The stock sandbox returns an Undefined that prints as ""; an explicit refusal is clearer.
        raise jinja2.exceptions.SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__} is unsafe")

    def wrap_str_format(self, value: Any):
        # jinja's str.format/format_map wrapper (sandboxed field lookup), with a formatter that counts field sizes.
        is_method = isinstance(value, (types.MethodType, types.BuiltinMethodType))
        if not is_method or value.__name__ not in ("format", "format_map") or not isinstance(value.__self__, str):
            return None
        fmt = value.__self__

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if value.__name__ == "format_map":
                if kwargs or len(args) != 1:
                    raise TypeError("format_map() takes exactly one positional argument")
                args, kwargs = (), args[0]
            budget = self.limits.max_chars - len(fmt)
            if isinstance(fmt, Markup):
                formatter: SandboxedFormatter = _SizedEscapeFormatter(self, budget, escape=fmt.escape)
            else:
                formatter = _SizedFormatter(self, budget)
            return type(fmt)(formatter.vformat(fmt, args, kwargs))

        return functools.update_wrapper(wrapper, value)


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
    except _Exhausted as exc:  # defensive: constant folding runs no budgeted call (they raise Impossible)
        raise TemplateError(name, f"refused: {exc}") from None


# The clock is this thread's CPU time: a template that loops burns it, while a busy machine that descheduled
# the render (or another thread holding the GIL) does not count against the template.
_clock = time.thread_time


class _Deadline:
    """A trace function that raises _Exhausted once the clock passes `deadline`: checked on every call and line."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.deadline = _clock() + seconds
        self.calls = 0  # > 0 while a filter, test, global or method the template called is running

    def check(self) -> None:
        if _clock() > self.deadline:
            raise _Exhausted(f"render exceeded its time budget of {self.seconds:g} s CPU (a loop that does not end?)")

    def global_trace(self, frame, event, arg):
        # Lines of template code, and of the library code the template calls (textwrap, pprint, markupsafe
        # loops are the template's loops too); other code only on calls. (Clock checks inlined: hot path.)
        filename = frame.f_code.co_filename
        if filename == TEMPLATE_FILENAME or self.calls:
            if _clock() > self.deadline:
                self.check()
            return None if filename in _PLUMBING else self.local_trace
        return None

    def local_trace(self, frame, event, arg):
        if event == "line" and _clock() > self.deadline:
            self.check()
        return self.local_trace


# Code whose lines need no check: this module (its loops are bounded by size) and jinja's call plumbing.
_PLUMBING = frozenset(
    {_Deadline.check.__code__.co_filename, jinja2.environment.__file__, jinja2.runtime.__file__, jinja2.sandbox.__file__}
)


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
    previous_trace, previous_deadline = sys.gettrace(), getattr(_STATE, "deadline", None)
    _STATE.deadline = deadline
    stream = template.generate(**variables)
    sys.settrace(deadline.global_trace)
    try:
        for chunk in stream:
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
        _STATE.deadline = previous_deadline
        deadline.deadline = float("inf")  # closing the template's generator must not trip the expired clock
        stream.close()
    return "".join(chunks)
