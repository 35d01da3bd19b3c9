"""Which template x system mode x permutation combinations render a 3-turn conversation, and why not."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from audit.chat.context import ChatContext
from audit.chat.permutations import PERMUTATIONS, PermutationError
from audit.chat.sandbox import TemplateError, TemplateRejected
from audit.chat.system_prompts import all_system_modes
from audit.chat.templates import load_template, template_names

CONVERSATION = ("What is your favourite animal?", "The owl.", "Why that one?")
"""user, assistant, user: the 3-turn conversation every combination must render (then a generation prompt)."""


@dataclass(frozen=True)
class Outcome:
    template: str
    mode: str
    permutation: str
    status: str
    """ok, unsupported (the template refuses or loses the context) or n/a (permutation does not apply)."""
    reason: str = ""
    context_id: str = ""
    rendered: str = ""
    """The rendered conversation (ok outcomes), to spot modes that render identically."""


def outcome(template_name: str, mode: str, permutation: str) -> Outcome:
    """Render CONVERSATION (and split an example) in one combination; classify the result."""
    template = load_template(template_name, bos_token="<s>", eos_token="</s>")
    try:
        context = ChatContext(template, mode, permutation)
    except PermutationError as exc:
        return Outcome(template_name, mode, permutation, "n/a", exc.reason)
    try:
        rendered = context.render(context.conversation(list(CONVERSATION)), add_generation_prompt=True)
        context.render_example(CONVERSATION[0], CONVERSATION[1])
    except TemplateRejected as exc:
        return Outcome(template_name, mode, permutation, "unsupported", exc.reason, context.id)
    except TemplateError as exc:
        return Outcome(template_name, mode, permutation, "error", exc.reason, context.id)
    missing = [t for t in CONVERSATION if t not in rendered]
    if context.mode.text and context.mode.text not in rendered:
        missing.append("system text")
    if missing:
        return Outcome(template_name, mode, permutation, "unsupported", f"drops {', '.join(missing)}", context.id)
    return Outcome(template_name, mode, permutation, "ok", "", context.id, rendered)


def all_outcomes() -> list[Outcome]:
    return [outcome(t, m, p) for t in template_names() for m in all_system_modes() for p in PERMUTATIONS]


def _cell(outcomes: list[Outcome]) -> str:
    counts = Counter(o.status for o in outcomes)
    if len(counts) == 1:
        status = next(iter(counts))
        return status if len(outcomes) == 1 else f"{status} {len(outcomes)}/{len(outcomes)}"
    return " ".join(f"{s} {n}/{len(outcomes)}" for s, n in sorted(counts.items()))


def outcome_tables(outcomes: list[Outcome]) -> str:
    """Markdown: template x mode (identity permutation), template x permutation (all modes), and the reasons."""
    from tabulate import tabulate  # only the CLI needs it

    templates = sorted({o.template for o in outcomes})
    mode_groups = {"template-default": ["template-default"], "empty": ["empty"], "custom:*": None, "as-user-prefix:*": None}
    rows = []
    for t in templates:
        row = [t]
        for group in mode_groups:
            prefix = group.rstrip("*")
            row.append(_cell([o for o in outcomes if o.template == t and o.permutation == "identity"
                              and (o.mode == group or (group.endswith("*") and o.mode.startswith(prefix)))]))
        default, empty = (next(o for o in outcomes if o.template == t and o.mode == m and o.permutation == "identity")
                          for m in ("template-default", "empty"))
        if default.status == empty.status == "ok" and default.rendered == empty.rendered:
            row[2] += " (renders as template-default)"
        rows.append(row)
    mode_table = tabulate(rows, headers=["template", *mode_groups], tablefmt="github")
    perm_rows = [[t, *(_cell([o for o in outcomes if o.template == t and o.permutation == p]) for p in PERMUTATIONS)] for t in templates]
    perm_table = tabulate(perm_rows, headers=["template (all modes)", *PERMUTATIONS], tablefmt="github")
    by_reason: dict[tuple[str, str], set[str]] = {}
    for o in outcomes:
        if o.status != "ok":
            by_reason.setdefault((o.status, o.reason.replace(repr(o.permutation), "<permutation>")), set()).add(o.template)
    lines = [f"- {s}: {r}: {', '.join(sorted(ts))}" for (s, r), ts in sorted(by_reason.items())]
    total = Counter(o.status for o in outcomes)
    summary = f"{len(outcomes)} combinations: " + ", ".join(f"{s} {n}" for s, n in sorted(total.items()))
    return "\n\n".join([summary, mode_table, perm_table, "Reasons:\n" + "\n".join(lines)])
