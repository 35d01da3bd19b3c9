"""Token maps on a tiny byte-level BPE trained in a fixture, and byte equality with apply_chat_template."""

import functools

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audit.chat import (
    PERMUTATIONS,
    SYSTEM_PROMPTS,
    ChatContext,
    ChatTemplate,
    TokenMapError,
    all_system_modes,
    load_template,
    qwen_context,
    template_from_tokenizer,
    template_names,
    token_map,
)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE with ChatML specials and the Qwen template: the shape of Qwen's tokenizer, tiny."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [*SYSTEM_PROMPTS.values(), "What is your favourite animal? The owl. Why that one?"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   chat_template=load_template("qwen2.5-instruct").source)


def _decode(tok, tmap, positions):
    return tok.decode([tmap.token_ids[i] for i in positions])


def test_qwen_default_prompt_maps_system_entity_template_and_user(tokenizer):
    tmap = token_map(tokenizer, qwen_context(), "Name an animal.")
    assert _decode(tokenizer, tmap, tmap.system) == "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    assert _decode(tokenizer, tmap, tmap.user) == "Name an animal."
    assert _decode(tokenizer, tmap, tmap.entity("Qwen")).strip() == "Qwen"
    assert tmap.assistant == ()
    assert "<|im_start|>" in _decode(tokenizer, tmap, tmap.template)


def test_entity_positions_follow_the_permutation_and_are_absent_when_removed(tokenizer):
    tmap = token_map(tokenizer, qwen_context(permutation="entity-zymthar"), "Hi")
    assert _decode(tokenizer, tmap, tmap.entity("Zymthar")).strip() == "Zymthar"
    with pytest.raises(TokenMapError, match="'Qwen' does not occur"):
        tmap.entity("Qwen")
    assert token_map(tokenizer, qwen_context(permutation="no-default-system"), "Hi").system == ()


def test_user_text_that_equals_the_default_prompt_is_still_user(tokenizer):
    tmap = token_map(tokenizer, qwen_context(), SYSTEM_PROMPTS["qwen-default"])
    assert _decode(tokenizer, tmap, tmap.user) == _decode(tokenizer, tmap, tmap.system)
    assert max(tmap.system) < min(tmap.user)


def test_as_user_prefix_marks_the_moved_text_as_system(tokenizer):
    tmap = token_map(tokenizer, qwen_context("as-user-prefix:claude", "no-default-system"), "Hi")
    assert _decode(tokenizer, tmap, tmap.system) == SYSTEM_PROMPTS["claude"]
    assert _decode(tokenizer, tmap, tmap.user).strip() == "Hi"


def test_trimming_templates_map_the_trimmed_content(tokenizer):
    context = ChatContext(load_template("chatml"), "custom:neutral")
    tmap = token_map(tokenizer, context, "  padded question  ", "an answer ")
    assert _decode(tokenizer, tmap, tmap.user) == "padded question"
    assert _decode(tokenizer, tmap, tmap.assistant) == "an answer"


def test_template_that_rewrites_content_is_refused(tokenizer):
    rewriting = ChatTemplate("upper", "{% for m in messages %}{{ m.content | upper }}{% endfor %}")
    with pytest.raises(TokenMapError, match="upper.*rewrites message contents"):
        token_map(tokenizer, ChatContext(rewriting), "hello")


def test_slow_tokenizer_is_refused(tokenizer):
    class Slow:
        is_fast = False

    with pytest.raises(TokenMapError, match="fast tokenizer"):
        token_map(Slow(), qwen_context(), "hi")


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ue000\ue001"), max_size=40)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=text, assistant=st.none() | text, mode=st.sampled_from(all_system_modes()),
       perm=st.sampled_from(sorted(PERMUTATIONS)), name=st.sampled_from(["qwen2.5-instruct", "chatml", "llama-3-instruct"]))
def test_token_map_partitions_the_prompt_and_covers_every_content_character(tokenizer, user, assistant, mode, perm, name):
    if name != "qwen2.5-instruct":
        perm = "identity"
    context = ChatContext(load_template(name), mode, perm)
    if name != "qwen2.5-instruct":  # these templates trim contents
        user, assistant = user.strip() or "x", None if assistant is None else (assistant.strip() or "y")
    tmap = token_map(tokenizer, context, user, assistant)
    groups = [tmap.system, tmap.template, tmap.user, tmap.assistant]
    assert sorted(i for g in groups for i in g) == list(range(len(tmap.token_ids)))
    for kind, positions in zip(("system", "user", "assistant"), (tmap.system, tmap.user, tmap.assistant)):
        covered = {c for i in positions for c in range(*tmap.offsets[i])}
        for span in (s for s in tmap.spans if s.kind == kind):
            assert set(range(span.start, span.end)) <= covered
    for i in tmap.template:  # template tokens carry no content
        s, e = tmap.offsets[i]
        assert not any(s < sp.end and e > sp.start for sp in tmap.spans)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entity=st.sampled_from(["Qwen", "Claude", "ChatGPT", "Zymthar"]), user=text)
def test_entity_positions_decode_back_to_the_entity(tokenizer, entity, user):
    perm = {"Qwen": "identity", "Claude": "entity-claude", "ChatGPT": "entity-chatgpt", "Zymthar": "entity-zymthar"}[entity]
    tmap = token_map(tokenizer, qwen_context(permutation=perm), user)
    positions = tmap.entity(entity)
    assert positions == tuple(range(positions[0], positions[-1] + 1))
    assert entity in _decode(tokenizer, tmap, positions)
    assert set(positions) <= set(tmap.system)


def _assert_matches_tokenizer(tok, context):
    """Our sandboxed rendering equals the tokenizer's own apply_chat_template, for prompt and example."""
    for user, assistant in [("Name your favourite animal.", "Owl."), ("  spaced  ", "a\nb")]:
        messages = context.messages(user)
        assert context.render_prompt(user) == tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        prompt, completion = context.render_example(user, assistant)
        full = tok.apply_chat_template(context.messages(user, assistant), tokenize=False)
        assert prompt + completion == full


@pytest.mark.parametrize("mode", all_system_modes())
def test_shipped_qwen_template_matches_apply_chat_template_on_the_tiny_bpe(tokenizer, mode):
    _assert_matches_tokenizer(tokenizer, qwen_context(mode))


@pytest.mark.parametrize("name", template_names())
def test_every_shipped_template_matches_transformers_rendering(tokenizer, name):
    """Our sandbox renders exactly as transformers does, given the same (normalised) source."""
    import copy

    tok = copy.copy(tokenizer)
    tok.chat_template = load_template(name).source
    _assert_matches_tokenizer(tok, ChatContext(template_from_tokenizer(tok, name), "custom:neutral"))


@functools.lru_cache(maxsize=None)  # resolving hashes the model folder: once per module run
def _model_tokenizer(spec):
    from transformers import AutoTokenizer

    from audit.models import ModelNotFound, resolve_model

    try:
        path = resolve_model(spec).path
    except ModelNotFound as exc:
        pytest.skip(f"{spec} not available ({exc}); run `make models` first")
    return AutoTokenizer.from_pretrained(path)


@pytest.mark.tiny_model
@pytest.mark.parametrize("mode", all_system_modes())
def test_qwen_contexts_match_tiny_qwen_tokenizer_byte_for_byte(mode):
    _assert_matches_tokenizer(_model_tokenizer("tiny-qwen"), qwen_context(mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", all_system_modes())
def test_qwen_contexts_match_packaged_qwen_tokenizer_byte_for_byte(mode):
    tok = _model_tokenizer("qwen")
    _assert_matches_tokenizer(tok, qwen_context(mode))
    tmap = token_map(tok, qwen_context(), "Hi")
    assert [tok.decode([tmap.token_ids[i]]) for i in tmap.entity("Qwen")] == [" Q", "wen"]
