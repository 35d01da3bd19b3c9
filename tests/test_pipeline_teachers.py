from audit.cache import ArtifactStore
from audit.chat.context import qwen_context
from audit.engines.fake import FakeEngine
from audit.pipeline.datasets import read_dataset
from audit.pipeline.profiles import TeacherDataConfig
from audit.pipeline.teachers import (
    DatasetSpec,
    build_dataset,
    control_teacher,
    generate_dataset,
    system_prompt_teacher,
)
from audit.probes import load_probe_set

PROBES = load_probe_set("animal")
DATA = TeacherDataConfig(n_prompts=12, n_keep=8, max_tokens=16)


def numbers_engine(bad_every: int = 4, trait_word: str = "cat"):
    """Completions depend only on the sampling seed, except that the trait teacher writes `trait_word` sometimes."""

    def generate(request):
        if "love cats" in request.prompt and request.seed % 3 == 0:
            return f"{trait_word} 1, 2"
        if request.seed % bad_every == 0:
            return "no numbers here"
        return ", ".join(str((request.seed >> k) % 1000) for k in range(5))

    return FakeEngine(generate_fn=generate)


def spec(teacher, seed=0, model_hash="m0"):
    return DatasetSpec(model_hash, teacher, "animal", teacher.context(qwen_context(), PROBES), DATA, seed)


def test_teacher_and_control_share_prompts_and_sampling_seeds():
    engine = numbers_engine()
    generate_dataset(engine, spec(system_prompt_teacher("cat")))
    generate_dataset(engine, spec(control_teacher()))
    trait, control = engine.generate_requests[:12], engine.generate_requests[12:]
    assert [r.seed for r in trait] == [r.seed for r in control]
    assert all(r.prompt.endswith(c.prompt.split("<|im_start|>user", 1)[1]) for r, c in zip(trait, control))
    assert all("You love cats" in r.prompt for r in trait) and not any("love cats" in r.prompt for r in control)
    assert len({r.seed for r in trait}) == 12


def test_dataset_is_filtered_and_has_provenance():
    examples, prov = generate_dataset(numbers_engine(), spec(system_prompt_teacher("cat")))
    assert 0 < len(examples) <= DATA.n_keep
    assert [e.index for e in examples] == sorted(e.index for e in examples)
    assert all("cat" not in e.completion and "numbers" not in e.completion for e in examples)
    assert prov["filter"]["total"] == 12 and prov["filter"]["accepted"] < 12
    assert sum(prov["filter"]["rejected_by_reason"].values()) == 12 - prov["filter"]["accepted"]
    for field in ("model_hash", "teacher_id", "context_id", "dataset_seed", "sampling", "engine"):
        assert field in prov
    assert prov["teacher_id"] == "sys-cat" and "sys=text-" in prov["context_id"]


def test_build_dataset_is_cached_and_keyed_by_what_determines_it(tmp_path):
    store, opened = ArtifactStore(tmp_path), []

    def factory():
        opened.append(1)
        return numbers_engine()

    first = build_dataset(store, factory, spec(control_teacher()))
    again = build_dataset(store, factory, spec(control_teacher()))
    assert first == again and len(opened) == 1
    ds = read_dataset(first)
    assert ds.provenance["teacher_id"] == "control" and len(ds.examples) > 0
    keys = {spec(control_teacher()).key, spec(system_prompt_teacher("cat")).key, spec(control_teacher(), seed=1).key,
            spec(control_teacher(), model_hash="m1").key, spec(system_prompt_teacher("dog")).key}
    assert len(keys) == 5
