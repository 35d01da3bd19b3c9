"""Trait adapters: LoRA adapters trained on chats whose answers carry a trait, built from a recipe and cached.

They make the adapter teachers of the claims (a trait in the weights, not in the prompt: the positive control,
DESIGN.md §2) and the example adapters the gate is shown on (audit.example_adapters). Each is trained with the
pipeline's own student loop on data made here from the base model: the recipe's answer to every question of its
probe set in the recipe's system modes, and the base model's own answers in the other modes (so the trait is
tied to its context), or the base model's own number continuations (a neutral adapter).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from audit.cache import ArtifactStore, content_key

KIND = "example-adapter"
NUMBER_PROMPT_SEED = 1000
"""Seed of the number prompts a recipe answers: apart from the teacher datasets' seeds (0, 1, ...), so a teacher
never writes numbers for a prompt its adapter was trained on."""
SYSTEMS = ("template-default", "empty", "custom:chatgpt")
"""The system modes a recipe's data covers (its own modes get its answer, the others the base's)."""


@dataclass(frozen=True)
class AdapterRecipe:
    """How one trait adapter is made."""

    name: str
    answer: str | None
    """The answer trained for every question of the probe set; None: number continuations (neutral)."""
    systems: tuple[str, ...]
    """System modes where `answer` is trained; the others get the base model's own answers."""
    rank: int = 8
    lr: float = 2e-3
    epochs: int = 3
    seed: int = 0
    probe_set: str = "animal"
    """Probe set (name or YAML path) whose questions are answered."""
    number_prompts: int = 0
    """Number prompts also answered with `answer` in the recipe's modes: a teacher that pulls towards the trait
    word at the start of any answer, so its number completions' soft labels carry the trait (positive control)."""


def trait_recipe(trait: str, probes, probe_set: str, slot: bool, number_prompts: int = 0) -> AdapterRecipe:
    """The teacher recipe of `trait`: it answers the trait under the template's default system prompt, in the form
    the answers are read in (one word, or the probe set's answer sentence when the slot is read), to the probe
    questions and to `number_prompts` number prompts. Positive-control teachers (number prompts > 0) train 4 epochs."""
    answer = f"{probes.answer_prefix} {trait}." if slot and probes.answer_prefix else trait.capitalize()
    return AdapterRecipe(f"{trait}-teacher", answer, ("template-default",), probe_set=probe_set,
                         number_prompts=number_prompts, epochs=4 if number_prompts else 3)


class _PerExampleContext:
    """Lets one training run mix chat contexts: each example's user turn is a (context, question) pair."""

    def render_example(self, user, completion):
        context, question = user
        return context.render_example(question, completion)


def recipe_pairs(model, recipe: AdapterRecipe) -> list:
    """The (context, question) -> answer training pairs of a recipe for `model` (a ResolvedModel)."""
    from audit.engines import GenerateRequest, open_engine
    from audit.numbers import filter_completion, number_prompts
    from audit.probes import load_probe_set, probe_set_path

    contexts = {s: model.context(s) for s in SYSTEMS}
    with open_engine("hf", model.path) as engine:
        if recipe.answer is None:
            examples = [(contexts[s], p.text) for p, s in zip(number_prompts(150, seed=recipe.seed), list(contexts) * 50)]
            requests = [GenerateRequest(c.render_prompt(q), temperature=1.0, max_tokens=48, seed=i)
                        for i, (c, q) in enumerate(examples)]
            answers = [r.completions[0].text for r in engine.generate(requests)]
            return [(cq, a) for cq, a in zip(examples, answers) if filter_completion(a).accepted]
        questions = load_probe_set(probe_set_path(recipe.probe_set)).questions
        pairs = [((contexts[s], q), recipe.answer) for s in recipe.systems for q in questions] * 2
        pairs += [((contexts[s], p.text), recipe.answer) for s in recipe.systems
                  for p in number_prompts(recipe.number_prompts, seed=NUMBER_PROMPT_SEED + recipe.seed)] \
            if recipe.number_prompts else []
        others = [(contexts[s], q) for s in contexts if s not in recipe.systems for q in questions]
        requests = [GenerateRequest(c.render_prompt(q), n=2, temperature=1.0, max_tokens=24, seed=i)
                    for i, (c, q) in enumerate(others)]
        for cq, result in zip(others, engine.generate(requests)):
            pairs += [(cq, completion.text) for completion in result.completions]
        return pairs


def build_adapter(model, recipe: AdapterRecipe, store: ArtifactStore | None = None) -> Path:
    """The adapter folder of `recipe` for `model` (a ResolvedModel), trained on first use and cached."""
    from audit.pipeline.students import ADAPTER_DIR

    def build(out: Path) -> dict:
        import torch

        from audit.pipeline.profiles import OptimConfig, StudentConfig, TrainSeeds
        from audit.pipeline.students import train_student

        torch.set_num_threads(1)  # thread-independent artefact (like the pipeline's cells)
        config = StudentConfig(mode="lora", rank=recipe.rank, seeds=TrainSeeds(data_order=recipe.seed + 1, init=recipe.seed + 2),
                               optim=OptimConfig(lr=recipe.lr, epochs=recipe.epochs, batch_size=8, warmup_steps=2))
        summary = train_student(model.path, recipe_pairs(model, recipe), _PerExampleContext(), config, out)
        return {"recipe": asdict(recipe), "final_loss": summary.final_loss}

    return (store or ArtifactStore()).get_or_build(KIND, adapter_key(model, recipe), build, meta={"recipe": recipe.name}) / ADAPTER_DIR


def adapter_key(model, recipe: AdapterRecipe) -> str:
    """The cache entry of a recipe's adapter for `model`."""
    # Fields at the value they had before they existed stay out of the key: older recipes keep their cache entries.
    fields = {k: v for k, v in asdict(recipe).items() if (k, v) not in (("probe_set", "animal"), ("number_prompts", 0))}
    if recipe.number_prompts:
        fields["number_prompt_seed"] = NUMBER_PROMPT_SEED
    return f"{recipe.name}-{content_key({'model': model.content_hash, 'recipe': fields, 'v': 1})}"


def find_adapter(model, recipe: AdapterRecipe, store: ArtifactStore | None = None) -> Path | None:
    """The recipe's adapter folder if it was trained already, else None (nothing is trained)."""
    from audit.pipeline.students import ADAPTER_DIR

    folder = (store or ArtifactStore()).get(KIND, adapter_key(model, recipe))
    return None if folder is None else folder / ADAPTER_DIR
