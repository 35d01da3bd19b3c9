"""Sandboxed rendering: real-template variables, clear one-line errors, hostile templates stopped fast."""

import time

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
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_template_is_refused_within_a_second_with_a_one_line_error(name):
    start = time.monotonic()
    with pytest.raises(TemplateError) as info:
        ChatTemplate(f"hostile-{name}", HOSTILE[name]).render([{"role": "user", "content": "hi"}])
    assert time.monotonic() - start < 1.0
    message = str(info.value)
    assert message.startswith(f"chat template 'hostile-{name}': ") and "\n" not in message


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


def test_messages_cannot_be_mutated_by_the_template():
    with pytest.raises(TemplateError, match="refused by the sandbox|unsafe"):
        ChatTemplate("mutate", "{{ messages.append(1) }}").render([])


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
