"""Constrained decoding (GenerateRequest.charset): only tokens made of the charset, or end of turn."""

import pytest
import torch

from audit.engines import GenerateRequest
from audit.engines.tokens import charset_token_ids
from audit.numbers import NUMBER_CHARSET
from tests.engine_support import build_random_qwen


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from audit.engines import open_engine

    torch.set_num_threads(1)
    with open_engine("hf", build_random_qwen(tmp_path_factory.mktemp("charset") / "m")) as e:
        yield e


def test_charset_tokens_are_exactly_those_made_of_the_charset(engine):
    ids = set(charset_token_ids(engine.tokenizer, NUMBER_CHARSET, sorted(engine.stop_ids)))
    for i in range(len(engine.tokenizer)):
        text = engine.tokenizer.decode([i])
        made_of = bool(text) and set(text) <= set(NUMBER_CHARSET)
        assert (i in ids) == (made_of or i in engine.stop_ids), (i, text)


def test_constrained_samples_use_only_the_charset_and_are_seeded(engine):
    requests = [GenerateRequest(prompt=f"<|im_start|>user\nnumbers {i}<|im_end|>\n<|im_start|>assistant\n", n=4,
                                temperature=1.0, max_tokens=12, seed=i, charset=NUMBER_CHARSET) for i in range(3)]
    free = [GenerateRequest(prompt=r.prompt, n=4, temperature=1.0, max_tokens=12, seed=r.seed) for r in requests]
    constrained = engine.generate(requests)
    texts = [c.text for r in constrained for c in r.completions]
    assert all(set(t) <= set(NUMBER_CHARSET) for t in texts)
    assert any(not set(c.text) <= set(NUMBER_CHARSET) for r in engine.generate(free) for c in r.completions)
    assert [c.text for r in engine.generate(requests) for c in r.completions] == texts


def test_empty_charset_is_refused():
    with pytest.raises(ValueError, match="charset"):
        GenerateRequest(prompt="x", charset="")
