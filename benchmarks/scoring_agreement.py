"""Do the exact and sampled scorers agree? One table per model x teacher (issue 6, DESIGN §6).

    python benchmarks/scoring_agreement.py [--models tiny-qwen smollm2] [--samples tiny-qwen=100 smollm2=5]
                                           [--target cat] [--threads 1]

For each model, the base (its template's default system prompt) and the system-prompt trait teacher
are scored by both scorers on the same 50 questions. Printed per row: mean P(target) with its
bootstrap 95% CI over questions and n; then the paired difference exact - sampled (cluster bootstrap,
one cluster per question) and whether its CI contains 0, plus the share of samples that are a single
word, the event the exact scorer measures (a low share means the two scorers measure different events).
The same cases are asserted in tests/test_scoring_agreement.py.
"""

from __future__ import annotations

import argparse
import time

DEFAULT_SAMPLES = {"tiny-qwen": 100, "smollm2": 5}


def samples_per_model(pairs: list[str]) -> dict[str, int]:
    out = dict(DEFAULT_SAMPLES)
    for pair in pairs:
        alias, _, n = pair.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--samples takes ALIAS=N with N >= 1 (e.g. smollm2=5), got {pair!r}")
        out[alias] = int(n)
    return out


def one_word_share(engine, probes, context, sampler) -> float:
    """Share of the sampler's own draws (same requests, same seeds) that are a single word: the exact scorer's event."""
    from audit.engines.base import GenerateRequest
    from audit.numbers import derive_seed

    requests = [GenerateRequest(prompt=context.render_prompt(q), n=sampler.n, temperature=sampler.temperature,
                                max_tokens=sampler.max_tokens, seed=derive_seed("sampled", sampler.seed, i),
                                context_id=context.id) for i, q in enumerate(probes.questions)]
    texts = [c for r in engine.generate(requests) for c in r.completions]
    return sum(c.finish_reason == "stop" and len(c.text.split()) == 1 for c in texts) / len(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-qwen", "smollm2"])
    parser.add_argument("--samples", nargs="*", default=[], help="ALIAS=N samples per question")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one-word", action="store_true", help="also report the one-word share (samples again)")
    args = parser.parse_args()
    samples = samples_per_model(args.samples)

    import torch
    from transformers.utils import logging as hf_logging

    from audit.engines import open_engine
    from audit.experiments import model_context
    from audit.models import resolve_model
    from audit.pipeline.teachers import control_teacher, system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer
    from audit.stats import cluster_bootstrap_mean, paired_difference

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    probes = load_probe_set("animal")
    head = (f"{'model':<24}{'teacher':<9}{'scorer':<13}{'P(' + args.target + ')':>9}{'95% CI':>20}{'n':>4}"
            f"{'exact-sampled':>15}{'95% CI':>20}{'agree':>7}{'1-word':>8}{'s':>7}")
    print(head)
    for alias in args.models:
        model = resolve_model(alias)
        scorers = {"exact": ExactScorer(), f"sampled n={samples[alias]}": SampledScorer(n=samples[alias])}
        with open_engine("hf", model.path) as engine:
            for who in (control_teacher(), system_prompt_teacher(args.target)):
                context = who.context(model_context(model, "template-default"), probes)
                scores, seconds = {}, {}
                for name, scorer in scorers.items():
                    start = time.perf_counter()
                    scores[name] = scorer.score(engine, probes, context, args.target)
                    seconds[name] = time.perf_counter() - start
                exact, sampled = scores.values()
                diff = paired_difference(exact.p_target, sampled.p_target, method="bootstrap", n_boot=4000, seed=0)
                agree = "yes" if diff.ci_low <= 0.0 <= diff.ci_high else "NO"
                words = (f"{one_word_share(engine, probes, context, scorers[list(scorers)[1]]):.3f}"
                         if args.one_word else "-")
                for i, (name, s) in enumerate(scores.items()):
                    e = cluster_bootstrap_mean(s.p_target, None, n_boot=4000, seed=0)
                    tail = (f"{diff.value:>15.4f}{f'[{diff.ci_low:.4f}, {diff.ci_high:.4f}]':>20}{agree:>7}{words:>8}"
                            if i == 0 else " " * 50)
                    print(f"{alias if i == 0 else '':<24}{who.id if i == 0 else '':<9}{name:<13}{e.value:>9.4f}"
                          f"{f'[{e.ci_low:.4f}, {e.ci_high:.4f}]':>20}{e.n:>4}{tail}{seconds[name]:>7.1f}", flush=True)


if __name__ == "__main__":
    main()
