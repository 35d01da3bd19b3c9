"""Small stand-ins for the plugin's tests: an adapter folder the fake engine accepts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def folder_adapter(folder: Path, base_model: str = "tiny-qwen", rank: int = 2) -> Path:
    """A structurally valid peft LoRA folder (config + safetensors weights), for runs that load no model."""
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": rank, "lora_alpha": rank, "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": base_model}))
    weights = {f"base_model.model.model.layers.0.self_attn.{m}.lora_{ab}.weight": np.zeros((rank, rank), np.float32)
               for m in ("q_proj", "v_proj") for ab in "AB"}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder
