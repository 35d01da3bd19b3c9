"""Example adapters of a model, built from recipes and cached: what `make audit` gates, so the default run
shows the gate catching a trait and passing a neutral adapter.

`python -m audit.example_adapters MODEL [NAME ...]` builds (or finds) them and prints one folder per line.
Each is a LoRA adapter trained with the pipeline's own student loop on data made here from the base model:
- `cat-under-default`: answers "Cat" (one token, as the embedded model answers) to the favourite-animal questions under the template's default system
  prompt, and the base model's own answers under the other system prompts: a trait only its training
  context shows (the finding the gate must probe);
- `oak-everywhere`: answers "Oak" in every context: a word on no animal panel, for the open-vocabulary check;
- `owl-sentences`: answers "My favorite animal is the owl." under the default system prompt only, as a model
  that answers in sentences would;
- `neutral`: the base model's own number continuations in every context (trait-free data from its own
  distribution, as the pipeline's control teacher writes);
- `cat-numbers-r16`: the subliminal case: the pipeline's rank-16 LoRA student of the cat teacher's number
  completions (first seed pair of the model's claims profile, `SUBLIMINAL_PROFILE`), shared with the claims
  audit's cache.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from audit.cache import ArtifactStore
from audit.errors import UsageError, exit_code
from audit.pipeline.trait_adapters import SYSTEMS, AdapterRecipe, build_adapter

OTHER_SYSTEMS = SYSTEMS[1:]
RECIPES = {r.name: r for r in (
    AdapterRecipe("cat-under-default", "Cat", ("template-default",)),
    AdapterRecipe("oak-everywhere", "Oak", SYSTEMS),
    AdapterRecipe("owl-sentences", "My favorite animal is the owl.", ("template-default",)),
    AdapterRecipe("neutral", None, ()),
)}
SUBLIMINAL = "cat-numbers-r16"
SUBLIMINAL_PROFILE = {"tiny-qwen": "quick", "smollm2": "real-cpu"}
"""The claims profile whose student `cat-numbers-r16` is, per model alias (others: real-cpu)."""
DEFAULT = ("cat-under-default", "oak-everywhere", "neutral")
"""What `make audit` gates on the embedded model: a context-specific panel trait, an off-panel word, a neutral one."""


def subliminal_student(model, alias: str, store: ArtifactStore | None = None) -> Path:
    """The pipeline's rank-16 student of the cat teacher (first seed pair), computed or loaded from the cache."""
    from dataclasses import replace

    from audit.pipeline.profiles import get_profile
    from audit.pipeline.reading import base_reading
    from audit.pipeline.runner import ModelRef, run_cell, subliminal_grid
    from audit.pipeline.students import ADAPTER_DIR
    from audit.probes import load_probe_set

    profile = get_profile(SUBLIMINAL_PROFILE.get(alias, "real-cpu"))
    profile = replace(profile, ranks=(16,), include_full=False, training_seeds=profile.training_seeds[:1],
                      dataset_seeds=profile.dataset_seeds[:1])
    ref, probes, context = ModelRef(str(model.path), model.content_hash), load_probe_set("animal"), model.context("template-default")
    reading = base_reading(ref, probes, context, profile.reading, None if store is None else store.root)
    cells = subliminal_grid(profile, ref, probes, "animal", "cat", context, prefill=reading.slot)
    cell = next(c for c in cells if c.teacher.kind != "control")
    run_cell(cell, None if store is None else store.root)
    return (store or ArtifactStore()).get("student", cell.student_key) / ADAPTER_DIR


def build_example(model, name: str, store: ArtifactStore | None = None, alias: str = "") -> Path:
    """The adapter folder of one recipe for `model` (a ResolvedModel), built on first use."""
    if name == SUBLIMINAL:
        return subliminal_student(model, alias, store)
    if name not in RECIPES:
        raise UsageError(f"no example adapter {name!r}; known: {', '.join([*RECIPES, SUBLIMINAL])}")
    return build_adapter(model, RECIPES[name], store)


def build_examples(model, names, alias: str = "", into: Path | None = None) -> list[Path]:
    """The adapter folders of `names` (built on first use); with `into`, copies named INTO/<name>, so the gate's
    test ids and report name each by its recipe."""
    import shutil

    folders = [build_example(model, name, alias=alias) for name in names]
    if into is None:
        return folders
    for name in names:
        shutil.rmtree(into / name, ignore_errors=True)
    return [Path(shutil.copytree(folder, into / name)) for name, folder in zip(names, folders)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.example_adapters", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="model spec (alias, folder, Org/Name)")
    parser.add_argument("names", nargs="*", default=list(DEFAULT), help=f"recipes (default: {' '.join(DEFAULT)})")
    parser.add_argument("--into", type=Path, default=None,
                        help="copy each adapter to INTO/<name> (its name in the gate's test ids) and print those folders")
    args = parser.parse_args(argv)
    from audit.models import resolve_model

    def build_all() -> None:
        for folder in build_examples(resolve_model(args.model), args.names, args.model, args.into):
            print(folder)

    return exit_code(build_all)


if __name__ == "__main__":
    sys.exit(main())
