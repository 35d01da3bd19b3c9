"""Do the exact and sampled scorers agree? One block per model x teacher (DESIGN.md §6).

    python benchmarks/scoring_agreement.py [--models tiny-qwen smollm2] [--samples tiny-qwen=100 smollm2=30]
                                           [--target cat] [--threads 1] [--prefill] [--seed 0]

For each model, the base (its template's default system prompt) and the system-prompt trait teacher
are scored by both scorers on the same 50 questions. Per statistic (audit.scoring module docstring):
"probability" (exact P(whole answer is the target) vs sampled P(a sample mentions it)) and "share"
(the target's share of the panel: among one-word answers vs among panel mentions), printed are each
scorer's mean with its bootstrap 95% CI over questions, the n of questions (share drops questions where
no sample named a panel entry: undefined there), and the paired difference exact - sampled (cluster
bootstrap, one cluster per question) with whether its CI contains 0. Below each block: how many samples
are a lone panel word (the exact scorer's event) and how many name a panel entry at all.
With --prefill both scorers write the probe set's answer prefix and read the answer slot (audit.scoring);
below each block then: how many samples fill the slot with a panel entry, and the target's mention rate
anywhere in the sample (what the reference's mention count would add after the slot).
The same cases are asserted in tests/test_scoring_agreement.py.
"""

from __future__ import annotations

import argparse
import time

DEFAULT_SAMPLES = {"tiny-qwen": 100, "smollm2": 30}
"""SmolLM2 names a panel entry in ~5% of samples (base): fewer than 30 per question leave its share undefined on most questions."""
STATISTICS = ("probability", "share")
HEADER = (f"{'model':<11}{'teacher':<9}{'statistic':<12}{'exact':>9}{'95% CI':>20}{'sampled':>9}{'95% CI':>20}"
          f"{'n':>4}{'ex-samp':>10}{'95% CI':>20}{'agree':>6}")


def samples_per_model(pairs: list[str]) -> dict[str, int]:
    out = dict(DEFAULT_SAMPLES)
    for pair in pairs:
        alias, _, n = pair.partition("=")
        if not n.isdigit() or int(n) < 1:
            raise SystemExit(f"--samples takes ALIAS=N with N >= 1 (e.g. smollm2=30), got {pair!r}")
        out[alias] = int(n)
    return out


def print_case(alias: str, teacher: str, exact, sampled, probes, seconds: dict[str, float]) -> None:
    """Both statistics' agreement for one model x teacher, then what the samples look like."""
    from audit.scoring import fills_slot, mentions, paired_values
    from audit.stats import cluster_bootstrap_mean, paired_difference

    for statistic in STATISTICS:
        a, b = paired_values(exact, sampled, statistic)
        means = [cluster_bootstrap_mean(v, None, n_boot=4000, seed=0) for v in (a, b)]
        diff = paired_difference(a, b, method="bootstrap", n_boot=4000, seed=0)
        cells = "".join(f"{e.value:>9.4f}{f'[{e.ci_low:.4f}, {e.ci_high:.4f}]':>20}" for e in means)
        agree = "yes" if diff.ci_low <= 0.0 <= diff.ci_high else "NO"
        print(f"{alias:<11}{teacher:<9}{statistic:<12}{cells}{diff.n:>4}{diff.value:>10.4f}"
              f"{f'[{diff.ci_low:.4f}, {diff.ci_high:.4f}]':>20}{agree:>6}", flush=True)
    texts = [t for question in sampled.samples for t in question]
    named = sum(any(mentions(t, e.surface_forms) for e in probes.panel) for t in texts) / len(texts)
    timing = f"exact {seconds['exact']:.0f} s, sampled {seconds['sampled']:.0f} s"
    if sampled.answer_prefix:
        slot = sum(any(fills_slot(t, e.surface_forms) for e in probes.panel) for t in texts) / len(texts)
        target = probes.entry(sampled.target).surface_forms
        anywhere = sum(mentions(t, target) for t in texts) / len(texts)
        print(f"{'':<20}{len(texts)} samples ({sampled.n_samples}/question) after {sampled.answer_prefix!r}: "
              f"{slot:.3f} fill the slot with a panel entry, {named:.3f} name one anywhere; {sampled.target} "
              f"in the slot {sum(sampled.p_target) / len(sampled.p_target):.4f}, anywhere {anywhere:.4f}; {timing}",
              flush=True)
        return
    forms = {form for entry in probes.panel for form in entry.surface_forms}
    lone = sum(t.strip() in forms for t in texts) / len(texts)
    print(f"{'':<20}{len(texts)} samples ({sampled.n_samples}/question): {lone:.3f} are a lone panel word "
          f"(the exact event), {named:.3f} name a panel entry; {timing}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["tiny-qwen", "smollm2"])
    parser.add_argument("--samples", nargs="*", default=[], help="ALIAS=N samples per question")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="sampled scorer's base seed (another seed: an independent "
                        "replicate of the sampled side)")
    parser.add_argument("--prefill", action="store_true", help="both scorers read the answer slot after the probe "
                        "set's answer_prefix")
    args = parser.parse_args()
    samples = samples_per_model(args.samples)

    import torch
    from transformers.utils import logging as hf_logging

    from audit.engines import open_engine
    from audit.models import resolve_model
    from audit.pipeline.teachers import control_teacher, system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    probes = load_probe_set("animal")
    print(HEADER)
    for alias in args.models:
        model = resolve_model(alias)
        scorers = {"exact": ExactScorer(prefill=args.prefill),
                   "sampled": SampledScorer(n=samples[alias], prefill=args.prefill, seed=args.seed)}
        with open_engine("hf", model.path) as engine:
            for who in (control_teacher(), system_prompt_teacher(args.target)):
                context = who.context(model.context("template-default"), probes)
                scores, seconds = {}, {}
                for name, scorer in scorers.items():
                    start = time.perf_counter()
                    scores[name] = scorer.score(engine, probes, context, args.target)
                    seconds[name] = time.perf_counter() - start
                print_case(alias, who.id, scores["exact"], scores["sampled"], probes, seconds)


if __name__ == "__main__":
    main()
