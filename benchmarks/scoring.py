"""Exact vs sampled trait scoring: 95% CI width of mean P(target) per second of compute, measured in one run.

    python benchmarks/scoring.py [--model tiny-qwen] [--target cat] [--samples 100] [--threads 2] [--prefill]

For the base model and the system-prompt trait teacher, both scorers run on the same questions; the CI
is a bootstrap over questions (each question one cluster). Cost to reach a given CI width scales with
seconds x width^2, so the reported ratio is (seconds x width^2)_sampled / (seconds x width^2)_exact:
how many times more compute the sampled scorer needs for the same precision. Also reports whether the
two means agree within their CIs. Questions are rendered in the model's own template with its
default system prompt; --prefill scores the answer slot after the probe set's answer_prefix (audit.scoring).

    python benchmarks/scoring.py --compare-prefix --threads 1 [--prefix-models smollm2,tiny-qwen]
        [--dtypes float32,bfloat16] [--prefix-questions N]

Exact scoring at the cost of one prompt pass: every question x panel surface form scored
(a) as its own full sequence (tests/engine_support.score_separately: right-padded batches, no cache
reuse) and (b) by ExactScorer on HfEngine (each prompt's shared prefix once, continuations on its KV
cache), for the base model and a rank-8 LoRA (lora_B ~ N(0, 0.01)). Reports CPU seconds of (a) and of
engine.score in (b), their ratio (the speed-up), ExactScorer's total CPU seconds (adds rendering the
answers) and the max |difference| of the per-continuation total logprobs. Use --threads 1: with more
threads than free cores, small ops wait on each other and the timings measure the machine's load.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class _RecordingEngine:
    """Passes score() through to an engine; keeps the requests, results (for the reference) and its CPU seconds."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.requests: list = []
        self.results: list = []
        self.cpu_s = 0.0

    def score(self, requests):
        start = time.process_time()
        results = self.engine.score(requests)
        self.cpu_s += time.process_time() - start
        self.requests += requests
        self.results += results
        return results


def compare_prefix_row(engine, reference, probes, context, target: str, adapter: str | None) -> dict:
    """CPU seconds of ExactScorer on `engine` (shared prefix) and of the separate-sequence reference on the
    same requests. CPU, not wall, seconds: on a shared machine waiting for a core is not the method's cost.

    reference: a PeftModel on the same weights holding the adapter; disabled for the base model.
    """
    from engine_support import score_separately

    from audit.scoring import ExactScorer

    recorder = _RecordingEngine(engine)
    start = time.process_time()
    ExactScorer().score(recorder, probes, context, target, adapter)
    shared_s = time.process_time() - start
    with reference.disable_adapter() if adapter is None else contextlib.nullcontext():
        start = time.process_time()
        separate = score_separately(reference, engine.tokenizer, recorder.requests)
        separate_s = time.process_time() - start
    diffs = [abs(a - b) for result, totals in zip(recorder.results, separate) for a, b in zip(result.totals, totals)]
    return {"sequences": len(diffs), "separate_s": separate_s, "shared_s": shared_s, "engine_s": recorder.cpu_s,
            "max_diff": max(diffs)}


def compare_prefix(specs: list[str], dtypes: list[str], target: str, probes_name: str, n_questions: int | None) -> None:
    """Print the separate-sequences vs shared-prefix table for each model and weight dtype.

    n_questions: evenly spaced questions to use (None: all); the separate sequences take ~10x as long.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from engine_support import make_adapter

    from audit.engines import ScoreRequest
    from audit.engines.hf import HfEngine
    from audit.models import resolve_model
    from audit.probes import load_probe_set

    probes = load_probe_set(probes_name)
    if n_questions is not None:
        step = len(probes.questions) / n_questions
        probes = probes.model_copy(update={"questions": [probes.questions[int(i * step)] for i in range(n_questions)]})
    print(f"{'model':<12}{'dtype':<10}{'weights':<9}{'questions':>10}{'sequences':>10}"
          f"{'separate cpu s':>15}{'prefix cpu s':>13}{'speed-up':>10}{'scorer cpu s':>13}{'max|diff|':>11}")
    scratch = tempfile.TemporaryDirectory(prefix="bench-prefix-")
    for spec in specs:
        model = resolve_model(spec)
        context = model.context("template-default")
        adapter = str(make_adapter(model.path, Path(scratch.name) / spec, rank=8, seed=0, std=0.01))
        for dtype in dtypes:
            engine = HfEngine(model.path, dtype=dtype)
            reference = AutoModelForCausalLM.from_pretrained(model.path, dtype=getattr(torch, dtype)).eval()
            reference = PeftModel.from_pretrained(reference, adapter, is_trainable=False).eval()
            warm = context.render_prompt(probes.questions[0])
            engine.score([ScoreRequest(warm, ("cat",), adapter=a) for a in (None, adapter)])  # loads the adapter
            for weights, which in (("base", None), ("lora r8", adapter)):
                r = compare_prefix_row(engine, reference, probes, context, target, which)
                print(f"{spec:<12}{dtype:<10}{weights:<9}{len(probes.questions):>10}{r['sequences']:>10}"
                      f"{r['separate_s']:>15.2f}{r['engine_s']:>13.2f}{r['separate_s'] / r['engine_s']:>9.1f}x"
                      f"{r['shared_s']:>13.2f}"
                      f"{r['max_diff']:>11.2e}", flush=True)
            engine.close()
    scratch.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen")
    parser.add_argument("--probes", default="animal")
    parser.add_argument("--target", default="cat")
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prefill", action="store_true", help="both scorers read the answer slot")
    parser.add_argument("--compare-prefix", action="store_true",
                        help="only the separate-sequences vs shared-prefix exact-scoring table")
    parser.add_argument("--prefix-models", default="smollm2,tiny-qwen")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--prefix-questions", type=int, default=None, help="evenly spaced subset (default: all)")
    args = parser.parse_args()

    import torch
    from transformers.utils import logging as hf_logging

    from audit.engines import open_engine
    from audit.models import resolve_model
    from audit.pipeline.teachers import system_prompt_teacher
    from audit.probes import load_probe_set
    from audit.scoring import ExactScorer, SampledScorer
    from audit.stats import cluster_bootstrap_mean

    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    if args.compare_prefix:
        print(f"{args.probes} probes, target {args.target}, torch threads {args.threads}")
        compare_prefix(args.prefix_models.split(","), args.dtypes.split(","), args.target, args.probes,
                       args.prefix_questions)
        return
    model, probes = resolve_model(args.model), load_probe_set(args.probes)
    base = model.context("template-default")
    contexts = {"base": base, f"teacher sys-{args.target}": system_prompt_teacher(args.target).context(base, probes)}
    scorers = {"exact": ExactScorer(prefill=args.prefill),
               f"sampled n={args.samples}": SampledScorer(n=args.samples, prefill=args.prefill)}
    print(f"model {model.name} ({model.content_hash[:12]}), {len(probes.questions)} questions, torch threads {args.threads}")
    print(f"{'model':<18}{'scorer':<18}{'P(target)':>10}{'95% CI':>20}{'width':>9}{'seconds':>9}{'s*width^2':>12}")
    with open_engine("hf", model.path) as engine:
        scorers["exact"].score(engine, probes, base, args.target)  # warm-up, untimed
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
