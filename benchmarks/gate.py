"""The gate's wall time: N adapters in one run (the base scored once) vs N runs of one adapter, measured in one go.

    .venv/bin/python benchmarks/gate.py [--model tiny-qwen] [--adapters cat-under-default oak-everywhere neutral]
                                        [--probe-set animal] [--dtype bfloat16] [--report-dir DIR]

The adapters are the model's example adapters (audit.example_adapters, built and cached first, not timed).
Each gate is a fresh `pytest audit/checks/test_gate.py` process, so a time includes start-up and model loading,
as a user's CI step does. Prints each run's wall time and the ratio (sum of N single runs) / (one run of N).
With --report-dir, the report of the run of all N is kept there (DIR/all/<run>/).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gate(model: str, adapters: list[Path], extra: list[str], report_dir: Path) -> float:
    """Wall seconds of one gate run (pytest's exit 1 for a failing gate is a finding, not an error)."""
    args = [sys.executable, "-m", "pytest", str(ROOT / "audit" / "checks" / "test_gate.py"), "--model", model,
            "--engine", "hf", "--report-dir", str(report_dir), "-q", "-p", "no:cacheprovider", *extra]
    for adapter in adapters:
        args += ["--adapter", str(adapter)]
    start = time.perf_counter()
    run = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if run.returncode not in (0, 1):
        raise SystemExit(f"gate run failed (exit {run.returncode}):\n{run.stdout[-3000:]}{run.stderr[-2000:]}")
    return seconds


def main() -> None:
    from audit.example_adapters import DEFAULT, build_examples
    from audit.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny-qwen")
    parser.add_argument("--adapters", nargs="+", default=list(DEFAULT))
    parser.add_argument("--probe-set", default=None, help="one probe family (default: every installed one)")
    parser.add_argument("--dtype", default=None, help="engine dtype (default: the audit's, float32 on CPU)")
    parser.add_argument("--report-dir", type=Path, default=None, help="keep the report of the run of all N here")
    args = parser.parse_args()
    model = resolve_model(args.model)
    extra = (["--probe-set", args.probe_set] if args.probe_set else []) + (["--dtype", args.dtype] if args.dtype else [])
    with tempfile.TemporaryDirectory() as scratch:
        adapters = build_examples(model, args.adapters, args.model, Path(scratch) / "adapters")
        together = gate(args.model, adapters, extra, args.report_dir / "all" if args.report_dir else Path(scratch))
        singles = [gate(args.model, [a], extra, Path(scratch)) for a in adapters]
    print(f"gate of {args.model}, {len(adapters)} adapters, probe sets: {args.probe_set or 'all installed'}, "
          f"dtype: {args.dtype or 'default'}, {os.cpu_count()} cores")
    for name, seconds in zip(args.adapters, singles):
        print(f"  {name:<22} alone: {seconds:7.1f} s")
    print(f"  {'all in one run':<22}        {together:7.1f} s")
    print(f"  N runs / one run of N: {sum(singles) / together:.2f}x")


if __name__ == "__main__":
    main()
