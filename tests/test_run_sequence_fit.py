"""A profile whose longest sequence does not fit the model (or vLLM's max_model_len) stops at start-up, in one line."""

from dataclasses import replace

import pytest

from audit.errors import UsageError


def test_a_profile_whose_sequences_outgrow_the_model_is_refused_at_start_up(tmp_path, monkeypatch):
    import json
    import shutil

    import audit.run
    from audit.config import build_config
    from audit.models import resolve_model
    from audit.pipeline.profiles import get_profile
    from audit.probes import load_probe_set, probe_set_path
    from audit.run import check_sequence_fit, resolve_run
    from tests.engine_support import build_random_qwen

    folder = build_random_qwen(tmp_path / "m")

    def model_with(positions: int):
        copy = tmp_path / f"m{positions}"
        shutil.copytree(folder, copy, dirs_exist_ok=True)
        config = json.loads((copy / "config.json").read_text())
        (copy / "config.json").write_text(json.dumps({**config, "max_position_embeddings": positions}))
        return resolve_model(str(copy))

    probes, quick = load_probe_set(probe_set_path("animal")), get_profile("quick")
    with pytest.raises(UsageError, match=r"profile quick: the longest teacher example is \d+ tokens \+ 40 completion "
                                         r"tokens \(max_tokens\), beyond m100's 100 positions; use a profile with fewer"):
        check_sequence_fit(quick, model_with(100), probes, ("cat",), "hf")
    config, passed = build_config({"model": str(model_with(100).path), "engine": "hf"}, {})
    with pytest.raises(UsageError, match="profile quick: the longest teacher example"):
        resolve_run(config, passed)  # before any engine opens or any cell runs
    check_sequence_fit(quick, model_with(400), probes, ("cat",), "hf")  # the tokens fit, the byte bound did not
    long = replace(quick, data=replace(quick.data, max_tokens=2000))
    with pytest.raises(UsageError, match="beyond the vLLM engine's max_model_len 1024"):
        check_sequence_fit(long, model_with(4096), probes, ("cat",), "vllm")
    check_sequence_fit(long, model_with(4096), probes, ("cat",), "hf")
    monkeypatch.setattr(audit.run, "_token_counter", lambda path: pytest.fail("the byte bound fits: no tokenizer"))
    check_sequence_fit(quick, model_with(4096), probes, ("cat",), "hf")
