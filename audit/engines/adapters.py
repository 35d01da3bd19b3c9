"""Adapter checks before use: one clear line per failure (AdapterError).

Checked: a peft LoRA folder (adapter_config.json), safetensors weights (pickled .bin only with
allow_pickle=True), the declared base model vs the loaded base, rank vs the engine's maximum, target
modules present in the model, and weight shapes that fit those modules. Nothing here runs remote code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from audit.errors import UsageError

SAFETENSORS_NAME = "adapter_model.safetensors"
PICKLE_NAME = "adapter_model.bin"


class AdapterError(UsageError):
    """An adapter that cannot be used as given; the message names the fix."""


@dataclass(frozen=True)
class AdapterInfo:
    path: Path
    """Resolved adapter folder."""
    rank: int
    """Largest LoRA rank in the adapter (rank_pattern included)."""
    alpha: float
    """lora_alpha (scaling = alpha / r)."""
    target_modules: tuple[str, ...]
    """Module names (or one regex) the adapter targets."""
    base_model: str | None
    """base_model_name_or_path declared in adapter_config.json."""
    weights_file: str
    """Name of the weights file that will be loaded."""


def validate_adapter(
    adapter_dir: str | Path,
    base,
    max_rank: int | None,
    allow_pickle: bool = False,
    model=None,
) -> AdapterInfo:
    """Check an adapter folder against a base model.

    base: a model folder, whose architecture the weights must fit (built on the meta device, no weights
    read), or a ResolvedModel, whose name (an alias included) the declared base_model_name_or_path must
    also match: the run checks that once at start-up, engines pass folders. model: the loaded base model,
    if at hand, instead of the meta one. base None: only the folder itself is checked (the fake engine).
    max_rank: the engine's largest servable rank (None: no limit).
    """
    path = Path(adapter_dir)
    config_file = path / "adapter_config.json"
    if not path.is_dir():
        raise AdapterError(f"adapter folder {path} does not exist; pass the folder peft's save_pretrained wrote")
    if not config_file.is_file():
        raise AdapterError(f"adapter folder {path} has no adapter_config.json; pass the folder peft's save_pretrained wrote")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"{config_file} is not valid JSON ({exc.msg}); re-save the adapter") from None

    weights_file = _weights_file(path, allow_pickle)
    if config.get("peft_type", "LORA") != "LORA":
        raise AdapterError(f"adapter {path} is peft type {config.get('peft_type')}, not LORA; only LoRA adapters are supported")
    if config.get("use_dora"):
        raise AdapterError(f"adapter {path} is a DoRA adapter; only plain LoRA is supported (vLLM and position gating)")

    declared = config.get("base_model_name_or_path")
    from audit.models.resolve import ResolvedModel

    if isinstance(base, ResolvedModel) and declared and not _same_base(declared, base):
        raise AdapterError(
            f"adapter {path} was trained on base '{declared}' but the loaded base is "
            f"'{base.name}'; "
            f"run it with --model {declared}"
        )

    rank = max([int(config.get("r", 8)), *map(int, (config.get("rank_pattern") or {}).values())])
    if max_rank is not None and rank > max_rank:
        raise AdapterError(
            f"adapter {path} has rank {rank} but the engine serves at most rank {max_rank}; "
            f"use --engine hf, which has no rank limit"
        )

    targets = config.get("target_modules") or ()
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    if not targets:
        raise AdapterError(f"adapter {path} declares no target_modules in adapter_config.json; re-save it with peft")
    keys = _weight_shapes(path) if weights_file == SAFETENSORS_NAME else {}
    if model is not None or base is not None:
        linear_shapes = _linear_shapes(model) if model is not None else base_shapes(Path(getattr(base, "path", base)))
        _check_targets(path.name, targets, linear_shapes)
        _check_shapes(path.name, keys, linear_shapes)

    return AdapterInfo(path.resolve(), rank, float(config.get("lora_alpha", rank)), targets, declared, weights_file)


def _weights_file(path: Path, allow_pickle: bool) -> str:
    if (path / SAFETENSORS_NAME).is_file():
        return SAFETENSORS_NAME
    if (path / PICKLE_NAME).is_file():
        if not allow_pickle:
            raise AdapterError(
                f"adapter {path} has pickled weights ({PICKLE_NAME}), which can run code when loaded; "
                f"re-save it as safetensors or pass allow_pickle=True"
            )
        return PICKLE_NAME
    raise AdapterError(f"adapter {path} has no {SAFETENSORS_NAME}; re-save it with peft's save_pretrained")


def _same_base(declared: str, base) -> bool:
    """Declared base matches the loaded one by path, folder name, or the resolved model's name."""
    base_path = Path(getattr(base, "path", base))
    known = {str(base_path), base_path.name, getattr(base, "name", None)}
    try:
        known.add(str(base_path.resolve()))
    except OSError:
        pass
    declared_path = Path(declared)
    candidates = {declared, declared_path.name}
    if declared_path.exists():
        candidates.add(str(declared_path.resolve()))
    return bool(candidates & known)


def base_shapes(base_path: Path) -> dict[str, tuple[int, int]]:
    """The base architecture's Linear shapes, from its meta model once per config and transformers version, then
    from the artefact store (building the meta model imports the modeling code: seconds at every start-up)."""
    import importlib.metadata

    from audit.cache import ArtifactStore, content_key

    config = (base_path / "config.json").read_text() if (base_path / "config.json").is_file() else str(base_path)
    key = content_key({"config": config, "transformers": importlib.metadata.version("transformers"), "v": 1})

    def build(out: Path) -> None:
        shapes = _linear_shapes(_meta_model(base_path))
        (out / "shapes.json").write_text(json.dumps(shapes, sort_keys=True))

    folder = ArtifactStore().get_or_build("linear-shapes", key, build)
    return {name: tuple(shape) for name, shape in json.loads((folder / "shapes.json").read_text()).items()}


def _meta_model(base_path: Path):
    """The base architecture on the meta device (no weights read, no remote code)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(base_path, trust_remote_code=False)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=False)


def _linear_shapes(model) -> dict[str, tuple[int, int]]:
    """Qualified name -> (in_features, out_features) of every Linear in the (unwrapped) base model."""
    import torch

    shapes = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            shapes[name.replace(".base_layer", "")] = (module.in_features, module.out_features)
    return shapes


def _check_targets(adapter: str, targets: tuple[str, ...], shapes: dict[str, tuple[int, int]]) -> None:
    if len(targets) == 1 and targets[0] not in ("all-linear",) and not re.fullmatch(r"[\w.]+", targets[0]):
        if not any(re.fullmatch(targets[0], name) for name in shapes):
            raise AdapterError(f"adapter {adapter}: target_modules regex {targets[0]!r} matches no Linear module in the base model")
        return
    missing = [t for t in targets if t != "all-linear" and not any(n == t or n.endswith("." + t) for n in shapes)]
    if missing:
        raise AdapterError(
            f"adapter {adapter}: target modules {', '.join(missing)} not found in the base model; "
            f"was it trained on another architecture?"
        )


def _weight_shapes(path: Path) -> dict[str, list[int]]:
    """Tensor name -> shape from the safetensors header (no tensor is read); one line if the file is corrupt."""
    from safetensors import SafetensorError, safe_open

    file = path / SAFETENSORS_NAME
    try:
        with safe_open(str(file), "numpy") as f:  # the header only; no torch import
            return {key: list(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"{file} is not a readable safetensors file ({exc}); re-save the adapter with peft's "
                           "save_pretrained") from None


def _check_shapes(adapter: str, keys: dict[str, list[int]], shapes: dict[str, tuple[int, int]]) -> None:
    """lora_A is (r, in) and lora_B (out, r): they must fit the module they adapt."""
    for key, shape in keys.items():
        match = re.match(r"(?:base_model\.model\.)?(.+)\.lora_([AB])(?:\.\w+)?\.weight$", key)
        if not match or match.group(1) not in shapes:
            continue
        in_features, out_features = shapes[match.group(1)]
        expected, got = (in_features, shape[1]) if match.group(2) == "A" else (out_features, shape[0])
        if expected != got:
            raise AdapterError(
                f"adapter {adapter}: {key} has size {got} where the base model's {match.group(1)} needs {expected}; "
                f"the adapter belongs to a different base model"
            )
