"""`python -m audit.report refresh DIR -- OPTIONS`: re-render a report folder from its results.json.

The measured checks, figures and samples are kept as they are; the provenance is completed by resolving the
options the run was started with (OPTIONS, as on the pytest command line) against this checkout: the protocol
(ranks, seeds, data sizes, learning rates, scorer, probe set hash) and the options as passed. Use it when the
report format changes, instead of recomputing an audit whose cache is gone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def refresh(folder: Path, options: list[str]) -> Path:
    """Rewrite folder/results.json, report.html and report.md; returns the folder."""
    from audit.config import dest, options as option_fields
    from audit.errors import SubauditError
    from audit.report.render import render_html, render_markdown
    from audit.results import AuditResults, Provenance
    from audit.session import AuditSession

    flags = {f.metadata["flag"]: f for f in option_fields()}
    cli: dict[str, object] = {}
    for flag, value in zip(options[::2], options[1::2]):
        if flag not in flags:
            raise SystemExit(f"unknown option {flag}; known: {', '.join(flags)}")
        f = flags[flag]
        cli[dest(f)] = [*cli.get(dest(f), []), value] if f.metadata["repeatable"] else value  # type: ignore[misc]
    try:
        data = json.loads((folder / "results.json").read_text())
        # Fields an older format had and this one dropped may go only when they held nothing.
        dropped = {k: v for k, v in data["provenance"].items() if k not in Provenance.model_fields}
        if any(v not in (None, "", [], {}) for v in dropped.values()):
            raise SubauditError(f"{folder}/results.json has provenance fields this version cannot keep: {sorted(dropped)}")
        data["provenance"] = {k: v for k, v in data["provenance"].items() if k not in dropped}
        results = AuditResults.model_validate(data)
    except (OSError, ValueError, KeyError) as exc:
        raise SubauditError(f"{folder}/results.json is not a readable audit result ({type(exc).__name__}); "
                            "rerun the audit") from None
    resolved = AuditSession.start(cli, {}).provenance()
    kept = results.provenance
    if kept.model_hash and resolved.model_hash != kept.model_hash:
        # The run's own hash stays: it names the weights that were measured (a conversion elsewhere can differ
        # in tokenizer metadata), so say it rather than refuse.
        print(f"note: the run measured model sha256 {kept.model_hash[:16]}; these options resolve here to "
              f"{resolved.model_hash[:16]} (kept the run's)", file=sys.stderr)
    provenance = resolved.model_copy(update={"model_path": "", **{k: getattr(kept, k) for k in (
        "run_id", "model_hash", "started_at", "wall_time_s", "versions", "command", "data", "engine", "dtype")}})
    results = results.model_copy(update={"provenance": provenance})
    for name, text in (("results.json", results.model_dump_json(indent=2)), ("report.html", render_html(results)),
                       ("report.md", render_markdown(results))):
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("refresh", help="re-render a report folder, completing its provenance")
    cmd.add_argument("folder", type=Path)
    cmd.add_argument("options", nargs=argparse.REMAINDER, help="the run's pytest options, e.g. --model smollm2 "
                     "--profile real-cpu")
    args = parser.parse_args(argv)
    from audit.errors import exit_code

    return exit_code(lambda: print(refresh(args.folder, [o for o in args.options if o != "--"])))


if __name__ == "__main__":
    sys.exit(main())
