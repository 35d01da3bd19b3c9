"""`python -m audit.pipeline --model tiny-qwen --profile quick --target cat`: run one trait's grid and print
stage wall times and transmission (trait student - control student) per student config, with 95% CIs."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m audit.pipeline", description=__doc__)
    parser.add_argument("--model", default="tiny-qwen", help="model spec for audit.models.resolve_model")
    parser.add_argument("--profile", default="quick", help="experiment profile (quick, real-cpu, paper, tiny)")
    parser.add_argument("--probes", default="animal", help="probe set name or YAML path")
    parser.add_argument("--target", default="cat", help="trait (a panel entry)")
    parser.add_argument("--objective", choices=("hard", "soft"), default=None, help="override the profile's objective")
    parser.add_argument("--rslora", action="store_true", help="rank-stabilised LoRA scaling alpha/sqrt(r)")
    parser.add_argument("--lr-rank-exponent", type=float, default=None,
                        help="per-rank LoRA learning rate: lr x (rank / reference rank) ** -EXPONENT (0.5 pairs with --rslora)")
    parser.add_argument("--students", action="store_true", help="also print every student's training diagnostics "
                        "(Markdown table)")
    parser.add_argument("--store", default=None, help="artefact store root (default: $SUBAUDIT_CACHE)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads outside the grid (cells run with executors.PIPELINE_THREADS)")
    args = parser.parse_args(argv)

    import torch

    from audit.models import resolve_model
    from audit.pipeline.analysis import paired_cells, student_table
    from audit.pipeline.profiles import get_profile
    from audit.pipeline.reading import base_reading
    from audit.pipeline.runner import ModelRef, run_grid, subliminal_grid
    from audit.probes import load_probe_set

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # one progress bar: the grid's
    torch.set_num_threads(args.threads)
    resolved = resolve_model(args.model)
    probes = load_probe_set(args.probes)
    profile = get_profile(args.profile, **({"objective": args.objective} if args.objective else {}))
    if args.lr_rank_exponent is not None:
        profile = replace(profile, lora=replace(profile.lora, lr_rank_exponent=args.lr_rank_exponent))
    ref, context = ModelRef(str(resolved.path), resolved.content_hash), resolved.context("template-default")
    reading = base_reading(ref, probes, context, profile.reading, args.store)
    print(reading.describe())
    cells = subliminal_grid(profile, ref, probes, args.probes, args.target, context, prefill=reading.slot,
                            **({"rslora": True} if args.rslora else {}))
    start = time.perf_counter()
    results = run_grid(cells, args.store, workers=profile.workers)
    total = time.perf_counter() - start
    stages: dict[str, float] = {}
    for r in results:
        for stage, seconds in r.stage_seconds.items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    print(f"{len(cells)} cells, wall {total:.1f} s; stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    print(f"statistic: {profile.statistic} (pp); a seed pair with a diverged student is left out and counted")
    print(f"{'student':<16}{'trait':>9}{'control':>9}{'delta pp':>10}{'95% CI (pp)':>22}{'p':>8}  seed pairs  diverged")
    for label, cell in paired_cells(results, profile.statistic).items():
        if not cell.measured:
            print(f"{label:<16}{'every seed pair diverged':>58}  0  {cell.diverged_pairs}")
            continue
        e = cell.estimate()
        trait, control = (100 * sum(v) / len(v) for v in (cell.trait, cell.control))
        print(f"{label:<16}{trait:>9.3f}{control:>9.3f}{100 * e.value:>10.3f}"
              f"{f'[{100 * e.ci_low:.3f}, {100 * e.ci_high:.3f}]':>22}{e.p_value if e.p_value is not None else float('nan'):>8.3f}"
              f"  {cell.n_seed_pairs}  {cell.diverged_pairs}")
    if args.students:
        print(student_table(results, profile.statistic))


if __name__ == "__main__":
    main()
