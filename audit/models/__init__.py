"""Models the audit runs on: resolution of `--model`, the embedded tiny-qwen, packaged real models.

Import the submodules directly (`audit.models.resolve`, `.tiny_qwen`, `.packaged`); this package stays light.
"""

from audit.errors import ModelNotFound
from audit.models.resolve import ResolvedModel, resolve_model

__all__ = ["ModelNotFound", "ResolvedModel", "resolve_model"]
