"""Experiment profiles: every number that sizes teacher data, students and evaluation.

`paper` is the reference protocol of DESIGN.md §2; `quick` is sized for tiny-qwen on a 2-core CPU,
`real-cpu` for SmolLM2-135M-Instruct on a 2-core CPU, `tiny` for the project's own tests. All run the
same code path; only these numbers differ. The measurements behind them: DESIGN.md §9. Pure (no torch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from audit.errors import UsageError
from audit.reading import READINGS

Mode = Literal["lora", "full"]
TeacherSource = Literal["system-prompt", "adapter"]
TEACHERS = ("system-prompt", "adapter")
Objective = Literal["hard", "soft"]
Precision = Literal["fp32", "bf16"]

CONTROL_COLUMNS = ("full-lora-lr", "rslora")
"""Optional control columns of the rank grid, each separating a claim from a step-size confound (DESIGN.md §2):
full FT at the LoRA learning rate (the reference full FT runs at a 10x lower lr), and rsLoRA at every rank with
alpha = sqrt(reference rank) (scale alpha/sqrt(r): the update size no longer grows with r as alpha = r makes it;
equal to the reference column at the reference rank)."""

LORA_TARGETS: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""All seven projections of a Qwen2/Llama block, as in the reference protocol."""


class ProfileError(UsageError):
    """An unknown profile or an inconsistent setting (one line, naming the fix)."""


@dataclass(frozen=True)
class TeacherDataConfig:
    """How many number completions a teacher writes and how they are sampled."""

    n_prompts: int
    """Number prompts sent to the teacher (before filtering)."""
    n_keep: int
    """Accepted completions kept, in prompt order (the dataset size)."""
    n_heldout: int = 0
    """Further accepted completions kept aside (never trained on) for the held-out KL diagnostic."""
    max_tokens: int = 48
    """Maximum new tokens per completion."""
    temperature: float = 1.0
    """Sampling temperature of the teacher."""
    dtype: str = "float32"
    """Weights dtype of the engine that writes the data ("bfloat16" halves a CPU's generation time)."""
    constrained: bool = False
    """Sample only tokens made of digits, ',' and spaces (or end of turn): the teacher's own distribution
    renormalised over number text. For models that rarely answer with numbers only (SmolLM2-135M: 7 of
    128 unconstrained completions passed the filter); the filter still applies."""

    def __post_init__(self) -> None:
        if not 0 < self.n_keep <= self.n_prompts:
            raise ProfileError(f"need 0 < n_keep <= n_prompts, got n_keep={self.n_keep}, n_prompts={self.n_prompts}")
        if self.n_heldout < 0:
            raise ProfileError(f"n_heldout must be >= 0, got {self.n_heldout}")


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser settings of one student mode (AdamW, linear schedule with warm-up)."""

    lr: float
    """Peak learning rate."""
    epochs: int
    """Passes over the dataset."""
    batch_size: int
    """Examples per optimiser step (per-device batch x gradient accumulation)."""
    warmup_steps: int = 5
    """Linear warm-up steps before the linear decay."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    grad_accumulation: int = 1
    """Gradient accumulation steps; batch_size must be divisible by it."""
    precision: Precision = "fp32"
    """Forward pass precision: "bf16" autocasts it (master weights, AdamW and the loss stay fp32)."""
    bucket_by_length: bool = False
    """Group examples of similar length into batches (less padding; the order stays seeded and random)."""
    lr_rank_exponent: float = 0.0
    """Per-rank learning rate for LoRA: lr x (rank / lr_reference_rank) ** -lr_rank_exponent. 0 keeps one lr
    for every rank (the reference); with rsLoRA scaling it separates rank from step size."""
    lr_reference_rank: int = 8
    """The rank whose learning rate is `lr` under the per-rank rule."""

    def __post_init__(self) -> None:
        if self.batch_size % self.grad_accumulation:
            raise ProfileError(f"batch_size {self.batch_size} is not divisible by grad_accumulation {self.grad_accumulation}")
        if self.precision not in ("fp32", "bf16"):
            raise ProfileError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        if self.lr_reference_rank < 1:
            raise ProfileError(f"lr_reference_rank must be >= 1, got {self.lr_reference_rank}")


@dataclass(frozen=True)
class TrainSeeds:
    """The two independent seeds of one student (DESIGN.md §2: they must differ)."""

    data_order: int
    """Seed of the shuffling of training examples."""
    init: int
    """Seed of the adapter initialisation (and of any other training randomness)."""

    @classmethod
    def from_training_seed(cls, seed: int) -> "TrainSeeds":
        """Derive both seeds from one replicate number, so replicates differ in both."""
        return cls(data_order=1000 + seed, init=2000 + seed)


@dataclass(frozen=True)
class StudentConfig:
    """Everything that determines how one student is finetuned (except its data)."""

    mode: Mode
    """"lora" (adapter on all seven projections) or "full" (every weight trains)."""
    optim: OptimConfig
    """Optimiser settings for this mode."""
    seeds: TrainSeeds
    """Data-order and init seeds."""
    rank: int | None = None
    """LoRA rank (None for full finetuning)."""
    alpha: float | None = None
    """LoRA alpha; None means alpha = rank (the reference)."""
    rslora: bool = False
    """Rank-stabilised scaling alpha/sqrt(r) instead of alpha/r."""
    objective: Objective = "hard"
    """"hard": cross-entropy on the teacher's sampled tokens; "soft": KL(teacher || student) per token."""
    column: str = ""
    """The control column this student belongs to ("" for the reference columns), e.g. "lora-lr": a name for the
    label and the claims, not part of what is trained (left out of cache keys)."""

    def __post_init__(self) -> None:
        if self.mode == "lora" and (self.rank is None or self.rank < 1):
            raise ProfileError(f"LoRA students need a rank >= 1, got {self.rank}")
        if self.mode == "full" and self.rank is not None:
            raise ProfileError("full finetuning takes no rank; pass rank=None")
        if self.objective not in ("hard", "soft"):
            raise ProfileError(f"objective must be 'hard' or 'soft', got {self.objective!r}")

    @property
    def label(self) -> str:
        """Short human-readable name: 'lora-r8', 'lora-r8-rs', 'full' (+ '-soft')."""
        base = "full" if self.mode == "full" else f"lora-r{self.rank}" + ("-rs" if self.rslora else "")
        return base + ("-soft" if self.objective == "soft" else "") + (f"-{self.column}" if self.column else "")

    @property
    def trained(self) -> dict:
        """What determines the trained weights (every field but `column`): the student's part of its cache key."""
        from dataclasses import asdict

        return {k: v for k, v in asdict(self).items() if k != "column"}

    @property
    def lr(self) -> float:
        """Peak learning rate of this student, after the per-rank rule (full finetuning: the optimiser's lr)."""
        if self.mode == "full":
            return self.optim.lr
        return self.optim.lr * (self.rank / self.optim.lr_reference_rank) ** -self.optim.lr_rank_exponent

    @property
    def lora_alpha(self) -> float:
        if self.rank is None:
            raise ProfileError("full finetuning has no LoRA alpha")
        return float(self.rank if self.alpha is None else self.alpha)


@dataclass(frozen=True)
class Profile:
    """The size of one experiment: data, students, seeds and evaluation."""

    name: str
    """Profile name ("paper", "quick", ...)."""
    data: TeacherDataConfig
    """Teacher data size and sampling."""
    lora: OptimConfig
    """Optimiser settings of LoRA students."""
    full: OptimConfig
    """Optimiser settings of fully finetuned students."""
    ranks: tuple[int, ...]
    """LoRA ranks of the grid."""
    include_full: bool
    """Whether the grid includes full finetuning."""
    dataset_seeds: tuple[int, ...]
    """Teacher dataset replicates."""
    training_seeds: tuple[int, ...]
    """Student training replicates per dataset."""
    objective: Objective = "hard"
    """Default student objective."""
    teacher_numbers: int = 0
    """Adapter teachers: number prompts their trait adapter also answers with the trait (0: only the probe
    questions; the positive control's 400 make the teacher's number completions carry the trait in their soft
    labels, audit.pipeline.trait_adapters)."""
    teacher: TeacherSource = "system-prompt"
    """Where the trait teacher's trait lives: "system-prompt" (the probe set's trait prompt, the paper's teacher) or
    "adapter" (the base plus a LoRA adapter trained to answer the trait, audit.pipeline.trait_adapters: a trait
    in the weights, which soft labels carry; the positive control)."""
    scorer: str = "exact"
    """Default trait scorer ("exact" or "sampled")."""
    samples_per_question: int = 100
    """Samples per question for the sampled scorer."""
    statistic: str = "probability"
    """Per-question trait value the verdicts compare: "probability" (P(answer is the target)) or "share"
    (the target's share of the panel)."""
    reading: str = "auto"
    """Where answers are read (audit.reading): "auto" measures the rule on the base model (the answer slot
    after the probe set's answer prefix when the base puts more panel mass there than in a whole one-word
    answer, as models that answer in sentences do); "one-word" or "slot" fix it."""
    workers: int = 1
    """Cells computed at once, each in its own process with one torch thread (results do not depend on it)."""
    control_columns: tuple[str, ...] = ()
    """Control columns trained beside the reference ones (`CONTROL_COLUMNS`): "full-lora-lr", "rslora"."""
    max_seed_pairs: int | None = None
    """Cap of a sequential design (audit.stats.sequential): training seeds double until the rank grid's claims are
    decided or this many seed pairs are reached. None: a fixed design of `seed_pairs`."""

    def __post_init__(self) -> None:
        if self.reading not in READINGS:
            raise ProfileError(f"reading must be one of {', '.join(READINGS)}, got {self.reading!r}")
        if self.teacher not in TEACHERS:
            raise ProfileError(f"teacher must be one of {', '.join(TEACHERS)}, got {self.teacher!r}")
        if self.objective not in ("hard", "soft"):
            raise ProfileError(f"objective must be 'hard' or 'soft', got {self.objective!r}")
        unknown = set(self.control_columns) - set(CONTROL_COLUMNS)
        if unknown:
            raise ProfileError(f"unknown control column(s) {', '.join(sorted(unknown))}; choose from {', '.join(CONTROL_COLUMNS)}")
        if self.max_seed_pairs is not None and self.max_seed_pairs < self.seed_pairs:
            raise ProfileError(f"max_seed_pairs {self.max_seed_pairs} is below the {self.seed_pairs} seed pairs the "
                               "grid starts with; raise it or start with fewer seeds")
        if "full-lora-lr" in self.control_columns and not self.include_full:
            raise ProfileError("control column full-lora-lr needs full finetuning in the grid; drop it or use a profile with full FT")

    @property
    def seed_pairs(self) -> int:
        """Independent replicates of each column: dataset seeds x training seeds."""
        return len(self.dataset_seeds) * len(self.training_seeds)

    def looks(self, alpha: float = 0.05) -> list:
        """The analyses of the sequential design (audit.stats.sequential): one look at `seed_pairs` when fixed."""
        from audit.stats.sequential import looks

        return looks(self.seed_pairs, self.max_seed_pairs or self.seed_pairs, len(self.dataset_seeds), alpha)

    def with_seed_pairs(self, pairs: int) -> "Profile":
        """This profile with training seeds added (after its largest) until it has `pairs` seed pairs."""
        wanted = -(-pairs // len(self.dataset_seeds))
        extra = range(max(self.training_seeds) + 1, max(self.training_seeds) + 1 + wanted - len(self.training_seeds))
        return replace(self, training_seeds=(*self.training_seeds, *extra))

    def student(self, mode: Mode, rank: int | None, training_seed: int, **overrides) -> StudentConfig:
        """The student config of one grid column, with this profile's optimiser settings."""
        optim = self.lora if mode == "lora" else self.full
        return StudentConfig(
            mode=mode, rank=rank, optim=optim, seeds=TrainSeeds.from_training_seed(training_seed),
            objective=overrides.pop("objective", self.objective), **overrides,
        )

    def students(self, training_seed: int, **overrides) -> list[StudentConfig]:
        """Every student column of the grid for one training seed: the reference columns, then the control columns."""
        return self.reference_students(training_seed, **overrides) + self.control_students(training_seed, **overrides)

    def reference_students(self, training_seed: int, **overrides) -> list[StudentConfig]:
        """The reference columns (the paper's): LoRA ranks, then full."""
        out = [self.student("lora", r, training_seed, **dict(overrides)) for r in self.ranks]
        if self.include_full:
            out.append(self.student("full", None, training_seed, **dict(overrides)))
        return out

    def control_students(self, training_seed: int, **overrides) -> list[StudentConfig]:
        """The control columns asked for: rsLoRA at every rank, full FT at the LoRA learning rate."""
        out = []
        if "rslora" in self.control_columns:
            alpha = math.sqrt(self.lora.lr_reference_rank)
            out += [self.student("lora", r, training_seed, **{**overrides, "rslora": True, "alpha": alpha})
                    for r in self.ranks]
        if "full-lora-lr" in self.control_columns:
            optim = replace(self.full, lr=self.lora.lr)
            out.append(StudentConfig(mode="full", optim=optim, seeds=TrainSeeds.from_training_seed(training_seed),
                                     objective=overrides.get("objective", self.objective), column="lora-lr"))
        return out


PAPER = Profile(
    name="paper",
    # The reference protocol (Nief et al. 2026), number for number: DESIGN.md §2.
    data=TeacherDataConfig(n_prompts=30_000, n_keep=10_000, max_tokens=64),
    lora=OptimConfig(lr=2e-4, epochs=3, batch_size=66, warmup_steps=5, grad_accumulation=3),
    full=OptimConfig(lr=2e-5, epochs=3, batch_size=64, warmup_steps=5),
    ranks=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
    include_full=True,
    dataset_seeds=(0, 1, 2),
    # Nief's 9 seed pairs as the cap of a sequential design starting at 3 (DESIGN.md §6: on their cat grid it
    # decides the rank and full-FT claims as often as 9 fixed pairs with ~6 pairs on average).
    training_seeds=(0,),
    max_seed_pairs=9,
)

QUICK = Profile(
    name="quick",
    # tiny-qwen on a 2-core CPU, cold claims suite ~10 min: ~2x prompts for a ~65% filter pass rate, a higher
    # lr for a from-scratch model's 40 steps, hard labels (soft cost more). Measurements: DESIGN.md §9.1.
    data=TeacherDataConfig(n_prompts=640, n_keep=320, max_tokens=40),
    lora=OptimConfig(lr=1e-3, epochs=2, batch_size=16, warmup_steps=2),
    full=OptimConfig(lr=3e-4, epochs=2, batch_size=16, warmup_steps=2),
    ranks=(1, 4, 16, 64),
    include_full=True,
    dataset_seeds=(0,),
    training_seeds=(0, 1),
    workers=2,  # both cores: one cell each (results do not depend on it)
)

REAL_CPU = Profile(
    name="real-cpu",
    # SmolLM2-135M-Instruct, the full claims audit on a 2-core CPU within 2 hours: number-constrained teachers,
    # the paper's 10:1 LoRA:full lr raised 5x for 20 steps, bf16 + length buckets. Measurements: DESIGN.md §9.2.
    data=TeacherDataConfig(n_prompts=2000, n_keep=320, n_heldout=32, max_tokens=40, dtype="bfloat16", constrained=True),
    lora=OptimConfig(lr=1e-3, epochs=1, batch_size=16, warmup_steps=2, precision="bf16", bucket_by_length=True),
    full=OptimConfig(lr=1e-4, epochs=1, batch_size=16, warmup_steps=2, precision="bf16", bucket_by_length=True),
    ranks=(4, 16, 64),
    include_full=True,
    dataset_seeds=(0,),
    # Three seed pairs: at two the cluster bootstrap was anti-conservative (DESIGN.md §6, §9.2).
    training_seeds=(0, 1, 2),
    workers=2,
)

TINY = Profile(
    name="tiny",
    # For the project's own tests (fault test, determinism): seconds per cell.
    data=TeacherDataConfig(n_prompts=24, n_keep=16, max_tokens=16),
    lora=OptimConfig(lr=1e-3, epochs=1, batch_size=8, warmup_steps=1),
    full=OptimConfig(lr=3e-4, epochs=1, batch_size=8, warmup_steps=1),
    ranks=(2,),
    include_full=True,
    dataset_seeds=(0,),
    training_seeds=(0,),
    samples_per_question=4,
)

POSITIVE = replace(
    QUICK,
    name="positive",
    # The positive control (DESIGN.md §2, §9.7): a transmission known in advance, on a 2-core CPU. The teacher is the
    # base plus a trait adapter that answers the trait to the probe questions and to number prompts, so its
    # number completions' soft labels pull towards the trait word; students distil them (KL, 6 epochs) from
    # number text sampled constrained to digits. Sized on pilots with dataset seed 0 (full FT +0.24 in P(cat) over
    # 2 seed pairs); its own students use dataset seed 1. Not the paper's hard-label setting.
    data=replace(QUICK.data, constrained=True),
    lora=replace(QUICK.lora, epochs=6),
    full=replace(QUICK.full, epochs=6),
    ranks=(4, 16, 64),
    dataset_seeds=(1,),
    objective="soft",
    teacher="adapter",
    teacher_numbers=400,
    max_seed_pairs=8,
    workers=2,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (PAPER, QUICK, REAL_CPU, TINY, POSITIVE)}


def get_profile(name: str, **overrides) -> Profile:
    """A named profile, optionally with fields replaced (e.g. objective="soft")."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise ProfileError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}") from None
    return replace(profile, **overrides) if overrides else profile
