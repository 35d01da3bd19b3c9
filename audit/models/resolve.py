"""Resolve `--model` to a local HF folder: alias, local directory, HF cache (offline) or packaged weights.

Never touches the network. The content hash covers weights, config and tokenizer files; it is cached in a
small sidecar keyed by each file's size and mtime, so re-resolving a large model is instant.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from audit.cache import cache_root, sha256_file
from audit.errors import ModelNotFound
from audit.models import packaged

if TYPE_CHECKING:
    from audit.chat import ChatContext, ChatTemplate

ALIASES = ("tiny-qwen", "smollm2", "qwen")
# Real Qwen2.5 instruct models `qwen` prefers, best first, when present in the HF cache.
QWEN_PREFERENCE = ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-14B-Instruct", "Qwen/Qwen2.5-3B-Instruct",
                   "Qwen/Qwen2.5-1.5B-Instruct", "Qwen/Qwen2.5-0.5B-Instruct")
HASHED_SUFFIXES = (".safetensors", ".bin", ".gguf", ".json", ".jinja", ".model", ".txt")
NOT_HASHED = {"manifest.json", "quality.json", "build.json"}  # bookkeeping, not model content


_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
"""An HF repo id (Org/Name); anything else with a slash is a path."""


@dataclass(frozen=True)
class ResolvedModel:
    """A model ready to load from a local folder."""

    name: str
    """Human-readable name (alias or repo id) for reports."""
    path: Path
    """HF-format folder with config.json."""
    source: str
    """Where it came from: embedded, packaged, hf-cache or local."""
    content_hash: str
    """sha256 over weights, config and tokenizer files (hex)."""
    chat_template: str | None
    """The folder's chat template source, if it has one."""
    bos_token: str = ""
    """The tokenizer's beginning-of-sequence token (a chat template may render it)."""
    eos_token: str = ""
    """The tokenizer's end-of-sequence token (a chat template may render it)."""

    @property
    def template_name(self) -> str:
        """The name its own chat template goes by in context ids: the repo's last part, lower case."""
        return self.name.split("/")[-1].lower()

    def template(self) -> "ChatTemplate":
        """The model's chat template, compile-checked in the sandbox (audit.chat.model_template)."""
        from audit.chat import model_template

        return model_template(self.template_name, self.chat_template, self.bos_token, self.eos_token)

    def context(self, system: str = "template-default", permutation: str = "identity") -> "ChatContext":
        """A chat context on the model's own template."""
        from audit.chat import ChatContext

        return ChatContext(self.template(), system, permutation)


def hf_hub_dir() -> Path:
    """The HF hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME")
    return (Path(home).expanduser() if home else Path.home() / ".cache" / "huggingface") / "hub"


def hf_cache_snapshot(repo_id: str) -> Path | None:
    """The cached snapshot of `repo_id` with a config.json (the one refs/main names, else the newest)."""
    repo = hf_hub_dir() / f"models--{repo_id.replace('/', '--')}"
    ref = repo / "refs" / "main"
    if ref.is_file():
        pinned = repo / "snapshots" / ref.read_text().strip()
        if (pinned / "config.json").is_file():
            return pinned
    snapshots = [s for s in (repo / "snapshots").glob("*") if (s / "config.json").is_file()]
    return max(snapshots, key=lambda s: s.stat().st_mtime) if snapshots else None


def _cached_qwen_instruct() -> tuple[str, Path] | None:
    for repo_id in QWEN_PREFERENCE:
        if (snapshot := hf_cache_snapshot(repo_id)) is not None:
            return repo_id, snapshot
    others = sorted(p.name for p in hf_hub_dir().glob("models--Qwen--Qwen2.5-*-Instruct"))
    for name in others:
        repo_id = name.removeprefix("models--").replace("--", "/")
        if (snapshot := hf_cache_snapshot(repo_id)) is not None:
            return repo_id, snapshot
    return None


def _hashed_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix in HASHED_SUFFIXES and p.name not in NOT_HASHED)


def content_hash(folder: Path) -> str:
    """sha256 over the model's files (names and contents), reusing a sidecar when sizes and mtimes match."""
    files = _hashed_files(folder)
    stamp = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files}
    sidecar = cache_root() / "hashes" / (hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:24] + ".json")
    try:
        cached = json.loads(sidecar.read_text())
        if cached["stamp"] == stamp:
            return cached["hash"]
    except (OSError, ValueError, KeyError):
        pass
    digest = hashlib.sha256()
    for p in files:
        digest.update(f"{p.name}\0{sha256_file(p)}\n".encode())
    value = digest.hexdigest()
    sidecar.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"folder": str(folder.resolve()), "stamp": stamp, "hash": value}))
    os.replace(tmp, sidecar)
    return value


def chat_template_of(folder: Path) -> str | None:
    """The chat template in chat_template.jinja or tokenizer_config.json, if any."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text()
    config = folder / "tokenizer_config.json"
    if config.is_file():
        template = json.loads(config.read_text()).get("chat_template")
        return template if isinstance(template, str) else None
    return None


def special_tokens_of(folder: Path) -> tuple[str, str]:
    """(bos_token, eos_token) as tokenizer_config.json declares them ("" where absent)."""
    config = folder / "tokenizer_config.json"
    try:
        data = json.loads(config.read_text()) if config.is_file() else {}
    except ValueError:
        raise ModelNotFound(f"{config} is not valid JSON; repair or re-save the tokenizer") from None

    def token(key: str) -> str:
        value = data.get(key)
        value = value.get("content") if isinstance(value, dict) else value
        return value if isinstance(value, str) else ""

    return token("bos_token"), token("eos_token")


def _resolved(name: str, path: Path, source: str) -> ResolvedModel:
    bos, eos = special_tokens_of(path)
    return ResolvedModel(name=name, path=path, source=source, content_hash=content_hash(path),
                         chat_template=chat_template_of(path), bos_token=bos, eos_token=eos)


def resolve_model(spec: str) -> ResolvedModel:
    """Resolve an alias (tiny-qwen, smollm2, qwen), a local folder or an HF repo id in the local cache."""
    if not spec.strip():
        raise ModelNotFound(f"--model is empty; give an alias ({', '.join(ALIASES)}), a model folder or an Org/Name")
    if spec == "tiny-qwen":
        from audit.models.tiny_qwen import ensure_tiny_qwen

        return _resolved("tiny-qwen", ensure_tiny_qwen(), "embedded")
    if spec == "smollm2":
        return _resolved(packaged.PACKAGES["smollm2"].name, packaged.ensure_packaged("smollm2"), "packaged")
    if spec == "qwen":
        if (found := _cached_qwen_instruct()) is not None:
            return _resolved(found[0], found[1], "hf-cache")
        return _resolved(packaged.PACKAGES["qwen"].name, packaged.ensure_packaged("qwen"), "packaged")
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelNotFound(f"model folder {path} has no config.json; point --model at an HF-format model folder")
        return _resolved(path.name, path.resolve(), "local")
    if path.exists():
        raise ModelNotFound(f"--model {spec} is a file, not a model folder; point it at the folder holding config.json")
    if _REPO_ID.fullmatch(spec):
        if (snapshot := hf_cache_snapshot(spec)) is not None:
            return _resolved(spec, snapshot, "hf-cache")
        raise ModelNotFound(f"{spec!r} is not in the HF cache {hf_hub_dir()} (offline; nothing is downloaded); "
                            f"fetch it elsewhere with `huggingface-cli download {spec}` or pass a local folder")
    if "/" in spec or spec.startswith(("~", ".")):
        raise ModelNotFound(f"model folder {spec} does not exist; pass an existing HF-format model folder to --model")
    raise ModelNotFound(f"unknown model {spec!r}: not an alias ({', '.join(ALIASES)}), a folder with config.json, "
                        f"or an Org/Name in the HF cache {hf_hub_dir()}; for packaged models run `make models`")
