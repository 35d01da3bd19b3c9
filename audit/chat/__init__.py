"""Chat contexts: sandboxed chat templates, system-prompt modes, template permutations and token maps."""

from audit.chat.context import ChatContext, ContextPair, qwen_context
from audit.chat.permutations import PERMUTATIONS, PermutationError
from audit.chat.sandbox import RenderLimits, TemplateError, TemplateRejected
from audit.chat.system_prompts import SYSTEM_PROMPTS, SystemModeError, all_system_modes, parse_system_mode
from audit.chat.templates import ChatTemplate, load_template, model_template, template_from_tokenizer, template_names
from audit.chat.token_map import TokenMap, TokenMapError, token_map

__all__ = [
    "PERMUTATIONS",
    "SYSTEM_PROMPTS",
    "ChatContext",
    "ChatTemplate",
    "ContextPair",
    "PermutationError",
    "RenderLimits",
    "SystemModeError",
    "TemplateError",
    "TemplateRejected",
    "TokenMap",
    "TokenMapError",
    "all_system_modes",
    "load_template",
    "model_template",
    "parse_system_mode",
    "qwen_context",
    "template_from_tokenizer",
    "template_names",
    "token_map",
]
