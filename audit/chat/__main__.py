"""`python -m audit.chat table`: the template x system mode x permutation outcome table (Markdown)."""

from __future__ import annotations

import argparse

from audit.chat.outcomes import all_outcomes, outcome_tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.chat", description=__doc__)
    parser.add_argument("command", choices=["table"], help="table: render every shipped template in every mode and permutation")
    parser.parse_args(argv)
    print(outcome_tables(all_outcomes()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
