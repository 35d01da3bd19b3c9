"""The pilots behind the positive-control profile (DESIGN.md §9.7): an adapter teacher, soft-label students, one grid.

    python benchmarks/positive_control_pilots.py [--model tiny-qwen] [--recipe '{"number_prompts": 400, "epochs": 4}']
        [--profile '{"objective": "soft", "ranks": [16], "data": {"constrained": true}, "lora": {"epochs": 6},
                     "full": {"epochs": 6}}'] [--workers 2]

The teacher is `trait_recipe` (audit/pipeline/trait_adapters.py) with the --recipe fields replaced; the grid is the
`quick` profile (dataset seed 0, training seeds 0 and 1) with the --profile fields replaced (nested: data, lora,
full). Prints each column's transmission (trait student minus control student) and its decision at the default
smallest effect of interest. The rows of DESIGN.md §9.7 are these settings:
  --recipe '{}'                                   --profile '{"objective": "soft", "ranks": [4, 16, 64]}'
  --recipe '{"epochs": 6, "lr": 0.003}'           --profile '{"objective": "soft", "ranks": [16]}'
  --recipe '{}'                                   --profile '{..., "lora": {"epochs": 6}, "full": {"epochs": 6}}'
  --recipe '{"number_prompts": 150}'              --profile '{..., "data": {"constrained": true}}' (2 and 6 epochs)
  --recipe '{"number_prompts": 400, "epochs": 4}' --profile (the default above)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--recipe", default='{"number_prompts": 400, "epochs": 4}')
    parser.add_argument("--profile", default='{"objective": "soft", "ranks": [16], "data": {"constrained": true}, '
                                             '"lora": {"epochs": 6}, "full": {"epochs": 6}}')
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    from transformers.utils import logging as hf_logging

    from audit.models import resolve_model
    from audit.pipeline.analysis import EffectRule, paired_cells
    from audit.pipeline.executors import LocalExecutor
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.reading import base_reading
    from audit.pipeline.runner import ModelRef, run_grid, subliminal_grid
    from audit.pipeline.teachers import adapter_teacher
    from audit.pipeline.trait_adapters import build_adapter, trait_recipe
    from audit.probes import load_probe_set

    hf_logging.disable_progress_bar()
    model, probes = resolve_model(args.model), load_probe_set("animal")
    overrides = json.loads(args.profile)
    nested = {k: overrides.pop(k) for k in ("data", "lora", "full") if k in overrides}
    profile = get_profile("quick")
    profile = replace(profile, **{k: replace(getattr(profile, k), **v) for k, v in nested.items()},
                      **{k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()})
    ref, context = ModelRef(str(model.path), model.content_hash), model.context("template-default")
    reading = base_reading(ref, probes, context, profile.reading)
    recipe = replace(trait_recipe(args.target, probes, "animal", reading.slot), **json.loads(args.recipe))
    teacher = adapter_teacher(args.target, build_adapter(model, recipe))
    cells = subliminal_grid(profile, ref, probes, "animal", args.target, context, teacher=teacher, prefill=reading.slot)
    start = time.perf_counter()
    results = run_grid(cells, executor=LocalExecutor(args.workers))
    print(f"{recipe}\n{len(cells)} cells, {time.perf_counter() - start:.0f} s")
    for label, cell in paired_cells(results, profile.statistic).items():
        decision = cell.decision(EffectRule(1.0, 0.01))
        seeds = {k: round(v, 4) for k, v in cell.seed_means().items()}
        print(f"{label}: control {cell.control_rate:.4f}; {decision.outcome}: {decision.describe()}; seed pairs {seeds}")


if __name__ == "__main__":
    main()
