"""Exact vs sampled trait scoring: 95% CI width of mean P(target) per second of compute, measured in one run.

    python benchmarks/scoring.py [--model tiny-qwen] [--target cat] [--samples 100] [--threads 2]

For the base model and the system-prompt trait teacher, both scorers run on the same questions; the CI
is a bootstrap over questions (each question one cluster). Cost to reach a given CI width scales with
seconds x width^2, so the reported ratio is (seconds x width^2)_sampled / (seconds x width^2)_exact:
how many times more compute the sampled scorer needs for the same precision. Also reports whether the
two means agree within their CIs (issue 6).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen")
    parser.add_argument("--probes", default="animal")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from audit.chat.context import qwen_context
    from audit.engines import open_engine
    from audit.models import resolve_model
    from audit.pipeline.teachers import system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer
    from audit.stats import cluster_bootstrap_mean

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    model, probes, base = resolve_model(args.model), load_probe_set(args.probes), qwen_context()
    contexts = {"base": base, f"teacher sys-{args.target}": system_prompt_teacher(args.target).context(base, probes)}
    scorers = {"exact": ExactScorer(), f"sampled n={args.samples}": SampledScorer(n=args.samples)}
    print(f"model {model.name} ({model.content_hash[:12]}), {len(probes.questions)} questions, torch threads {args.threads}")
    print(f"{'model':<18}{'scorer':<18}{'P(target)':>10}{'95% CI':>20}{'width':>9}{'seconds':>9}{'s*width^2':>12}")
    with open_engine("hf", model.path) as engine:
        ExactScorer().score(engine, probes, base, args.target)  # warm-up, untimed
        for who, context in contexts.items():
            cost = {}
            estimates = {}
            for name, scorer in scorers.items():
                start = time.perf_counter()
                scores = scorer.score(engine, probes, context, args.target)
                seconds = time.perf_counter() - start
                e = cluster_bootstrap_mean(scores.p_target, None, n_boot=2000, seed=0)
                width = e.ci_high - e.ci_low
                cost[name] = seconds * width**2
                estimates[name] = e
                print(f"{who:<18}{name:<18}{e.value:>10.4f}{f'[{e.ci_low:.4f}, {e.ci_high:.4f}]':>20}"
                      f"{width:>9.4f}{seconds:>9.2f}{cost[name]:>12.2e}")
            exact, sampled = estimates.values()
            overlap = exact.ci_low <= sampled.ci_high and sampled.ci_low <= exact.ci_high
            ratio = list(cost.values())[1] / list(cost.values())[0]
            print(f"  -> {who}: sampled needs {ratio:.1f}x the compute of exact for the same CI width; "
                  f"CIs {'overlap (agree)' if overlap else 'DO NOT overlap'}")


if __name__ == "__main__":
    main()
