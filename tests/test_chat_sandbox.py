"""Sandboxed rendering: real-template variables, clear one-line errors, hostile templates stopped fast."""

import time
import tracemalloc

import pytest

from audit.chat import ChatTemplate, TemplateError, TemplateRejected, load_template, template_names

HOSTILE = {
    "internals": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "globals": "{{ raise_exception.__globals__ }}",
    "nested-loop": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "list-loop": "{% set xs = range(99999) | list %}{% for a in xs %}{% for b in xs %}{{ '' }}{% endfor %}{% endfor %}",
    "big-range": "{% for i in range(10**9) %}{% endfor %}",
    "10mb-output": "{% for i in range(100000) %}{{ 'x' * 100 }}{% endfor %}",
    "10mb-string": "{{ 'x' * 10000000 }}",
    "doubling": "{% set ns = namespace(s='ab') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}{{ ns.s }}",
    "huge-power": "{{ 2 ** 100000000 }}",
    "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "syntax": "{% for m in messages %}{{ m.content }",
    "undefined-call": "{{ messages.nope() }}",
    # One C call that would allocate far past max_chars before any line check: the two reported cases ...
    "format-filter-width": "{{ '%0300000000d'|format(1) }}",
    "center-filter": "{{ 'x'|center(300000000) }}",
    # ... printf-style `%` (widths, precisions, `*`, keys, bytes, floats' digits) ...
    "printf-width": "{{ '%0300000000d' % 1 }}",
    "printf-precision": "{{ '%.300000000f' % 1.0 }}",
    "printf-star": "{{ '%*d' % (300000000, 1) }}",
    "printf-star-filter": "{{ '%*s'|format(300000000, 'x') }}",
    "printf-keyed": "{{ '%((a))0300000000d' % {'(a)': 1} }}",
    "printf-keyed-repeat": "{{ ('%(a)s' * 100000) % {'a': 'x' * 1000} }}",
    "printf-bytes": "{{ '%0300000000d'.encode() % 1 }}",
    "printf-floats": "{{ ('%f' * 50000) % ((1e308,) * 50000) }}",
    # ... str methods (padding, tabs, replace, join, translate, format/format_map) ...
    "str-center": "{{ 'x'.center(300000000) }}",
    "str-ljust": "{{ 'x'.ljust(300000000) }}",
    "str-rjust": "{{ 'x'.rjust(300000000, '-') }}",
    "str-zfill": "{{ '1'.zfill(300000000) }}",
    "str-expandtabs": "{{ '\\t'.expandtabs(300000000) }}",
    "str-replace": "{{ ('x' * 100000).replace('x', 'y' * 100000) }}",
    "str-join": "{{ ('x' * 1000000).join(['a'] * 1000) }}",
    "str-join-chars": "{{ ','.join('x' * 900000) }}",
    "str-translate": "{{ ('x' * 100000).translate({120: 'y' * 100000}) }}",
    "str-format-width": "{{ '{:>300000000}'.format(1) }}",
    "str-format-nested-width": "{{ '{:{}}'.format(1, 300000000) }}",
    "str-format-precision": "{{ '{:.300000000f}'.format(1.0) }}",
    "str-format-fields": "{{ ('{0}' * 100000).format('x' * 1000) }}",
    "str-format-map": "{{ '{a:>300000000}'.format_map({'a': 1}) }}",
    "markup-format": "{{ ('{}'|safe).format('x' * 999999 ~ 'x') }}",
    # ... other methods and globals ...
    "int-to-bytes": "{{ (1).to_bytes(300000000, 'big') }}",
    "dict-fromkeys": "{{ dict.fromkeys(range(100000), 'x' * 100000) }}",
    "lipsum": "{{ lipsum(300000000) }}",
    "lipsum-words": "{{ lipsum(1, min=300000000, max=300000001) }}",
    # ... filters with a size or count argument ...
    "replace-filter": "{{ ('x' * 100000)|replace('x', 'y' * 100000) }}",
    "join-filter": "{{ (['x' * 999999] * 1000)|join }}",
    "join-separator": "{{ range(100000)|join('x' * 100000) }}",
    "indent-width": "{{ 'a\\nb'|indent(300000000) }}",
    "indent-string": "{{ ('\\n' * 100000)|indent('x' * 100000, blank=True) }}",
    "wordwrap": "{{ ('a ' * 100000)|wordwrap(1, wrapstring='x' * 100000) }}",
    "batch-fill": "{{ [1]|batch(300000000, 'x')|list }}",
    "slice-count": "{{ [1]|slice(300000000)|list }}",
    "list-of-chars": "{{ ('\\u0100' * 1000000)|list|length }}",
    "tojson-indent": "{{ (range(100)|list)|tojson(indent=300000000) }}",
    "tojson-separators": "{{ (range(100000)|list)|tojson(separators=('x' * 100000, ':')) }}",
    "pprint-indent": "{% set d = {'k' * 100000: range(10000)|list} %}{{ d|pprint }}",
    "sum-nested": "{{ ([['x' * 1000] * 1000] * 1000)|sum(start=[]) }}",
    "round-power": "{{ 1|round(-300000000) }}",
    "round-floor-power": "{{ 1.5|round(300000000, 'floor') }}",
    # ... big integers (one product or division can run for minutes) ...
    "int-squaring": "{% set ns = namespace(i=7) %}{% for k in range(40) %}{% set ns.i = ns.i * ns.i %}{% endfor %}",
    "int-filter-huge": "{{ ('f' * 900000)|int(base=16) }}",
    # ... printing or stringifying one value shared a thousand times (small in memory, huge as text) ...
    "print-shared-list": "{% set xs = ['x' * 999999] * 1000 %}{{ xs }}",
    "tilde-shared-list": "{% set xs = ['x' * 999999] * 1000 %}{{ xs ~ '' }}",
    "tilde-chain": "{% set s = 'x' * 1000000 %}{{ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s ~ s }}",
    "string-filter": "{{ (['x' * 999999] * 1000)|string }}",
    "lower-test": "{{ (['x' * 999999] * 1000) is lower }}",
    "deep-namespace": "{% set ns = namespace(a=[1]) %}{% for i in range(60) %}{% set ns.a = [ns.a, ns.a] %}{% endfor %}{{ ns }}",
    # ... output captured and joined in one call (macros, blocks), or collected from an iterator ...
    "macro-buffer": "{% macro m() %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endmacro %}{{ m()|length }}",
    "set-block": "{% set x %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endset %}",
    "filter-block": "{% filter length %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endfilter %}",
    "block-call": "{% if false %}{% block b %}{% for i in range(100000) %}{{ 'x' * 999999 }}{% endfor %}{% endblock %}"
    "{% endif %}{{ self.b()|length }}",
    "map-collect": "{{ range(100000)|map('center', 999999)|list|length }}",
    "loop-length": "{% for x in range(100000)|map('center', 999999) %}{{ loop.length }}{% endfor %}",
    # ... and Python-level loops inside filters, stopped by the deadline.
    "striptags-quadratic": "{{ ('<>' * 400000)|striptags }}",
    "urlize-many": "{{ ('a.com ' * 160000)|urlize }}",
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_is_refused_within_a_second_with_a_one_line_error(name):
    # CPU time of this thread, the budget's own clock: on a loaded machine wall time says little.
    start = time.thread_time()
    with pytest.raises(TemplateError) as info:
        ChatTemplate(f"hostile-{name}", HOSTILE[name]).render([{"role": "user", "content": "hi"}])
    assert time.thread_time() - start < 1.0
    message = str(info.value)
    assert message.startswith(f"chat template 'hostile-{name}': ") and "\n" not in message


# Cases whose danger is time (or that never run), not an allocation.
TIME_ONLY = {"internals", "globals", "nested-loop", "list-loop", "big-range", "recursion", "syntax", "undefined-call"}


@pytest.mark.parametrize("name", sorted(set(HOSTILE) - TIME_ONLY))
def test_hostile_template_render_allocates_little(name):
    tracemalloc.start()
    try:
        with pytest.raises(TemplateError):
            ChatTemplate(f"hostile-{name}", HOSTILE[name]).render([{"role": "user", "content": "hi"}])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20, f"peak {peak / 2**20:.0f} MB"


def test_bounded_calls_still_serve_real_uses():
    source = (
        "{{ '%05d|%s'|format(42, 'a') }} {{ '%-4s|%.2f' % ('b', 3.14159) }} {{ '{:>4}|{x}'.format('c', x=1) }} "
        "{{ 'ab'.center(6, '*') }} {{ 'q'|center(5) }}{{ 'a\\nb'|indent(2) }} {{ 'x-y'.replace('-', '+') }} "
        "{{ [1, 2]|join(', ') }} {{ range(7)|batch(3, 0)|list }} {{ [[1], [2]]|sum(start=[]) }} {{ 17|round(-1) }} "
        "{{ {'a': [1]}|tojson(indent=2) }} {{ {'a': 1}|pprint }} {{ 'x' ~ 2 ~ [3] }} {{ 2 ** 10 * 3 // 7 % 5 }}"
    )
    assert ChatTemplate("uses", source).render([]) == (
        "00042|a b   |3.14    c|1 **ab**   q  a\n  b x+y 1, 2 [[0, 1, 2], [3, 4, 5], [6, 0, 0]] [1, 2] 20 "
        """{\n  "a": [\n    1\n  ]\n} {'a': 1} x2[3] 3"""
    )
    # Builtin sum() of lists is quadratic; the bounded one is not.
    start = time.thread_time()
    assert ChatTemplate("sum", "{{ ([[1]] * 100000)|sum(start=[])|length }}").render([]) == "100000"
    assert time.thread_time() - start < 1.0


def test_deadline_restores_an_outer_trace_function():
    import sys

    def tracer(*_):
        return None

    sys.settrace(tracer)
    try:
        with pytest.raises(TemplateError):
            ChatTemplate("loop", HOSTILE["nested-loop"]).render([])
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)


def test_raise_exception_becomes_template_rejected_with_the_template_message():
    template = load_template("mistral-instruct")
    with pytest.raises(TemplateRejected, match="mistral-instruct.*must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_real_template_variables_and_filters():
    source = (
        "{{ bos_token }}{% for m in messages %}{% if loop.first %}{% continue %}{% endif %}{{ m.content | trim }}"
        "{% endfor %}{{ tools | tojson }}{{ eos_token if add_generation_prompt }}"
    )
    template = ChatTemplate("vars", source, bos_token="<s>", eos_token="</s>")
    messages = [{"role": "user", "content": "skip"}, {"role": "user", "content": "  kept  "}]
    assert template.render(messages, add_generation_prompt=True, tools=[{"name": "<x>"}]) == '<s>kept[{"name": "<x>"}]</s>'


@pytest.mark.parametrize("source", ["{{ messages.append(1) }}", "{{ dict.update(messages[0], role='x') }}"])
def test_messages_cannot_be_mutated_by_the_template(source):
    messages = [{"role": "user", "content": "hi"}]
    with pytest.raises(TemplateError, match="refused by the sandbox|unsafe"):
        ChatTemplate("mutate", source).render(messages)


def test_unknown_template_name_lists_the_known_ones():
    with pytest.raises(TemplateError, match="no such template.*qwen2.5-instruct"):
        load_template("nope")


@pytest.mark.parametrize("name", template_names())
def test_every_shipped_template_compiles_and_renders_a_three_turn_conversation(name):
    template = load_template(name, "<s>", "</s>")
    turns = ["first question", "first answer", "second question"]
    messages = [{"role": r, "content": t} for r, t in zip(["user", "assistant", "user"], turns)]
    rendered = template.render(messages, add_generation_prompt=True)
    positions = [rendered.index(t) for t in turns]
    assert positions == sorted(positions)
    assert "    " not in rendered  # layout-only indentation of pretty-printed upstream files is gone
