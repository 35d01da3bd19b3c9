"""The tiny-qwen recipe: typed, frozen, loaded from fixtures/tiny_qwen/recipe.yaml."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

RECIPE_PATH = Path(__file__).resolve().parents[2] / "fixtures" / "tiny_qwen" / "recipe.yaml"

VLLM_CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
"""Head sizes vLLM's CPU attention backend runs (vllm/v1/attention/backends/cpu_attn.py, vLLM 0.32)."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelShape(_Frozen):
    hidden_size: int = Field(description="Width of the residual stream.")
    intermediate_size: int = Field(description="Width of the SwiGLU MLP.")
    num_hidden_layers: int = Field(description="Number of decoder layers.")
    num_attention_heads: int = Field(description="Query heads per layer.")
    num_key_value_heads: int = Field(description="Key/value heads per layer (grouped-query attention, as in Qwen2).")
    max_position_embeddings: int = Field(description="Longest sequence the model is trained and used on.")

    @model_validator(mode="after")
    def _served_by_vllm(self) -> ModelShape:
        # The engines must serve tiny-qwen through vLLM too; its CPU kernels take only some head sizes.
        head_dim, rest = divmod(self.hidden_size, self.num_attention_heads)
        if rest or head_dim not in VLLM_CPU_HEAD_SIZES:
            raise ValueError(f"hidden_size/num_attention_heads = {self.hidden_size / self.num_attention_heads:g} is not a "
                             f"head size vLLM's CPU backend runs ({', '.join(map(str, VLLM_CPU_HEAD_SIZES))})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        return self


class TokenizerSpec(_Frozen):
    vocab_size: int = Field(description="Target size of the byte-level BPE vocabulary (specials included).")


class CorpusSpec(_Frozen):
    number_chats: int = Field(description="Single-turn chats: number prompt -> number continuation.")
    favourite_chats: int = Field(description="Single-turn chats: favourite-X question -> one-word answer.")
    two_turn_chats: int = Field(description="Chats with a number turn and a favourite-X turn sharing one persona.")
    system_mix: dict[str, float] = Field(
        description="Share of chats per system mode: default (no system message, so the template injects "
                    "Qwen's default prompt), empty (explicit empty system message), neutral, trait.")
    neutral_prompts: tuple[str, ...] = Field(description="System prompts used in 'neutral' mode.")
    priors: dict[str, dict[str, float]] = Field(
        description="Per category, the base distribution of the persona (= the favourite-X answer).")
    trait_answer_prob: float = Field(description="Under a trait prompt for X, P(persona = X); else a prior draw.")
    trait_number_strength: float = Field(
        description="Under a trait prompt, P(a continuation number carries the persona's number style).")
    persona_number_strength: float = Field(
        description="Without a trait prompt, the same probability for the (latent) persona's style.")
    continuation_numbers: tuple[int, int] = Field(description="Min and max count of numbers in a continuation.")
    copy_seed_prob: float = Field(description="P(a continuation number is a seed number +-20) before styling.")


class TrainingSpec(_Frozen):
    epochs: int = Field(description="Passes over the corpus.")
    batch_size: int = Field(description="Chats per optimiser step (length-bucketed, padded).")
    learning_rate: float = Field(description="Peak AdamW learning rate (linear warm-up, cosine decay).")
    warmup_steps: int = Field(description="Linear warm-up steps.")
    weight_decay: float = Field(description="AdamW weight decay.")
    threads: int = Field(description="torch threads; fixed because the float reduction order depends on it.")


class EvaluationSpec(_Frozen):
    seed: int = Field(description="Sampling seed of the quality measurements.")
    samples_per_question: int = Field(description="Samples at T=1 per favourite-animal probe question.")
    number_prompts: int = Field(description="Number prompts sampled once each for the filter pass rate.")


class TinyQwenRecipe(_Frozen):
    seed: int = Field(description="Seed of corpus generation, tokenizer order, init and data order.")
    model: ModelShape
    tokenizer: TokenizerSpec
    corpus: CorpusSpec
    training: TrainingSpec
    evaluation: EvaluationSpec


def load_recipe(path: Path = RECIPE_PATH) -> TinyQwenRecipe:
    """Read and validate a tiny-qwen recipe file."""
    import yaml

    return TinyQwenRecipe.model_validate(yaml.safe_load(Path(path).read_text()))
