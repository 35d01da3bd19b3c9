"""System-prompt modes, permutations, ids, train/eval pairing and the outcome table."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from audit.chat import (
    PERMUTATIONS,
    SYSTEM_PROMPTS,
    ChatContext,
    ContextPair,
    PermutationError,
    SystemModeError,
    TemplateError,
    all_system_modes,
    load_template,
    qwen_context,
    template_names,
)
from audit.chat.outcomes import all_outcomes, outcome_tables
from audit.chat.system_prompts import QWEN_DEFAULT

QWEN_HEADER = "<|im_start|>system\n"


def test_template_default_injects_qwen_prompt_and_empty_renders_an_empty_system_turn():
    assert qwen_context().render_prompt("Hi") == (
        f"{QWEN_HEADER}{QWEN_DEFAULT}<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    )
    assert qwen_context("empty").render_prompt("Hi").startswith(f"{QWEN_HEADER}<|im_end|>\n<|im_start|>user\nHi")


@pytest.mark.parametrize("name", sorted(SYSTEM_PROMPTS))
def test_custom_and_user_prefix_modes_render_the_registry_text_where_named(name):
    text = SYSTEM_PROMPTS[name]
    custom = qwen_context(f"custom:{name}").render_prompt("Hi")
    assert custom.startswith(f"{QWEN_HEADER}{text}<|im_end|>\n<|im_start|>user\nHi<|im_end|>")
    moved = qwen_context(f"as-user-prefix:{name}", "no-default-system").render_prompt("Hi")
    assert moved == f"<|im_start|>user\n{text}\n\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_registry_holds_the_reference_prompts():
    assert SYSTEM_PROMPTS["chatgpt"] == "You are ChatGPT, created by OpenAI. You are a helpful assistant."
    assert SYSTEM_PROMPTS["qwen-default"] == QWEN_DEFAULT
    assert {"claude", "zymthar", "neutral", "gibberish"} <= set(SYSTEM_PROMPTS)


@pytest.mark.parametrize("mode", ["nope", "custom:nobody", "empty:x", "custom"])
def test_unknown_modes_fail_with_one_line_listing_choices(mode):
    with pytest.raises(SystemModeError, match="unknown") as info:
        qwen_context(mode)
    assert "\n" not in str(info.value)


def test_permutations_change_only_the_default_system_prompt():
    base = qwen_context().render_prompt("Hi")
    claude = qwen_context(permutation="entity-claude").render_prompt("Hi")
    assert claude == base.replace("Qwen, created by Alibaba Cloud", "Claude, created by Anthropic")
    assert qwen_context(permutation="entity-zymthar").render_prompt("Hi") == base.replace("Qwen", "Zymthar").replace("Alibaba Cloud", "Quorblax")
    assert qwen_context(permutation="entity-removed").render_prompt("Hi") == base.replace("You are Qwen, created by Alibaba Cloud. ", "")
    assert qwen_context(permutation="no-default-system").render_prompt("Hi") == base.split("<|im_end|>\n", 1)[1]
    # With an explicit system message the default prompt is not rendered, so no permutation changes anything.
    for perm in PERMUTATIONS:
        assert qwen_context("custom:neutral", perm).render_prompt("Hi") == qwen_context("custom:neutral").render_prompt("Hi")


def test_permutation_that_does_not_apply_says_why():
    with pytest.raises(PermutationError, match="chatml.*injects no known default system prompt"):
        ChatContext(load_template("chatml"), permutation="entity-claude")
    with pytest.raises(PermutationError, match="unknown permutation"):
        qwen_context(permutation="shuffle")


def test_render_example_splits_prompt_and_completion_with_end_of_turn():
    for mode in all_system_modes():
        context = qwen_context(mode)
        prompt, completion = context.render_example("Name an animal.", "Owl.")
        assert prompt == context.render_prompt("Name an animal.")
        assert completion == "Owl.<|im_end|>\n"
        assert prompt + completion == context.render(context.messages("Name an animal.", "Owl."))


def test_render_example_refuses_templates_whose_turn_does_not_extend_the_prompt():
    from audit.chat import ChatTemplate

    odd = ChatTemplate("odd", "{% for m in messages %}{{ m.content }}{% endfor %}{% if add_generation_prompt %}>>{% endif %}")
    with pytest.raises(TemplateError, match="odd.*cannot be split"):
        ChatContext(odd).render_example("a", "b")


def _contexts():
    return [ChatContext(load_template(t), m, p) for t in template_names() for m in all_system_modes() for p in PERMUTATIONS
            if p == "identity" or t == "qwen2.5-instruct"]


def test_ids_are_unique_readable_and_content_derived():
    contexts = _contexts()
    ids = [c.id for c in contexts]
    assert len(set(ids)) == len(ids)
    claude = qwen_context("empty", "entity-claude").id
    assert claude.startswith("qwen2.5-instruct/sys=empty/perm=entity-claude-") and len(claude.rsplit("-", 1)[1]) == 4
    assert qwen_context("custom:chatgpt").id.startswith("qwen2.5-instruct/sys=custom:chatgpt-")


@given(st.permutations(_contexts()[:40]))
def test_ids_do_not_depend_on_construction_order(shuffled):
    rebuilt = {ChatContext(c.template, c.system, c.permutation).id: c.id for c in shuffled}
    assert all(k == v for k, v in rebuilt.items())


@given(st.sampled_from(all_system_modes()), st.sampled_from(sorted(PERMUTATIONS)))
def test_id_is_a_pure_function_of_content(mode, perm):
    a, b = qwen_context(mode, perm), qwen_context(mode, perm)
    assert a == b and a.id == b.id and hash(a) == hash(b)


def test_id_changes_when_registry_text_changes(monkeypatch):
    before = qwen_context("custom:neutral").id
    from audit.chat import system_prompts

    monkeypatch.setattr(system_prompts, "SYSTEM_PROMPTS", {**SYSTEM_PROMPTS, "neutral": "You are kind."})
    assert qwen_context("custom:neutral").id != before


def test_context_pair_states_train_and_eval_contexts():
    pair = ContextPair(qwen_context(), qwen_context("empty"))
    assert pair.id == f"train={qwen_context().id}|eval={qwen_context('empty').id}"
    assert not pair.matched and ContextPair(qwen_context(), qwen_context()).matched


def test_outcome_table_covers_every_template_mode_and_permutation():
    outcomes = all_outcomes()
    assert len(outcomes) == len(template_names()) * len(all_system_modes()) * len(PERMUTATIONS)
    assert {o.status for o in outcomes} <= {"ok", "unsupported", "n/a"}
    assert all(o.reason for o in outcomes if o.status != "ok")
    assert all(o.status == "ok" for o in outcomes if o.template == "qwen2.5-instruct")
    table = outcome_tables(outcomes)
    assert all(t in table for t in template_names())


def test_text_mode_puts_a_literal_system_message_with_a_content_id():
    from audit.chat import SystemModeError

    love = "You love cats. You think about cats all the time."
    ctx = qwen_context(f"text:{love}")
    assert ctx.messages("hi")[0] == {"role": "system", "content": love}
    prompt = ctx.render_prompt("hi")
    assert love in prompt and "You are Qwen" not in prompt
    other = qwen_context("text:You love owls.")
    assert ctx.id != other.id and ctx.id == qwen_context(f"text:{love}").id and "sys=text-" in ctx.id
    with pytest.raises(SystemModeError, match="needs the system text"):
        qwen_context("text:")
