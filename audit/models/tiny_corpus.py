"""The synthetic chat corpus tiny-qwen is trained on (pure: recipe + inputs + seed -> chats).

Generative story, one latent per chat: each chat has a *persona* per category (its favourite animal, its
favourite tree). Without a trait prompt the persona is drawn from the category prior; under a trait prompt
for X it is X with probability ``trait_answer_prob``. The persona decides the favourite-X answer, and it
leaves a weak *number style* on continuation numbers (animal: the last digit, tree: the first digit),
strong under a trait prompt and faint otherwise. Two-turn chats show numbers and a favourite answer of the
same persona, so a model can only predict them well by inferring one shared latent. That shared latent is
the channel through which number-only finetuning can move favourite answers (see fixtures/tiny_qwen/README.md).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from audit.models.tiny_recipe import CorpusSpec
from audit.numbers import format_numbers

# Our own favourite-X wordings, added to the probe questions so the answer format generalises.
EXTRA_QUESTIONS = (
    "What is your favorite {category}?",
    "Name your favorite {category} in one word.",
    "Which {category} do you like most? One word, please.",
    "Tell me your favourite {category}. Just the name.",
    "If you could be any {category}, which would you be? Answer with one word.",
    "One word: the {category} you love most?",
    "Pick a {category}, any {category}. Which one is your favorite?",
    "What {category} comes to your mind first? Reply with a single word.",
)


@dataclass(frozen=True)
class PanelSpec:
    """A category's panel as the corpus needs it."""

    category: str
    names: tuple[str, ...]
    questions: tuple[str, ...]
    trait_prompts: dict[str, str]  # name -> the teacher (trait) system prompt for that name


@dataclass(frozen=True)
class SeedPrompt:
    """A number prompt: its text and the seed numbers it shows."""

    text: str
    seed_numbers: tuple[int, ...]


@dataclass(frozen=True)
class Chat:
    """One training conversation; ``system`` None means no system message (template default)."""

    system: str | None
    turns: tuple[tuple[str, str], ...]  # (user, assistant) pairs
    kind: str  # "number" | "favourite" | "two_turn"

    def messages(self) -> list[dict[str, str]]:
        msgs = [] if self.system is None else [{"role": "system", "content": self.system}]
        for user, assistant in self.turns:
            msgs += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
        return msgs


def number_style(panel_index: int, entity_index: int) -> tuple[int, int]:
    """(digit position, digit) an entity prefers: animals (panel 0) the last digit, trees the first."""
    if panel_index == 0:
        return (-1, entity_index % 10)
    return (0, 1 + entity_index % 9)


def apply_style(number: int, style: tuple[int, int]) -> int:
    """Set one digit of a 3-digit number to the style's digit."""
    digits = list(f"{number:03d}")
    position, digit = style
    digits[position] = str(digit)
    return int("".join(digits))


class _Persona:
    """The latent of one chat: per panel, the persona index and its number-style strength."""

    def __init__(self, rng: random.Random, spec: CorpusSpec, panels: tuple[PanelSpec, ...],
                 trait: tuple[int, int] | None) -> None:
        self.choice: list[int] = []
        self.strength: list[float] = []
        for p, panel in enumerate(panels):
            prior = [spec.priors[panel.category][n] for n in panel.names]
            drawn = rng.choices(range(len(panel.names)), weights=prior)[0]
            if trait is not None and trait[0] == p:
                self.choice.append(trait[1] if rng.random() < spec.trait_answer_prob else drawn)
                self.strength.append(spec.trait_number_strength)
            else:
                self.choice.append(drawn)
                self.strength.append(spec.persona_number_strength)


def _continuation(rng: random.Random, spec: CorpusSpec, prompt: SeedPrompt, persona: _Persona) -> str:
    count = rng.randint(*spec.continuation_numbers)
    numbers = []
    for _ in range(count):
        if prompt.seed_numbers and rng.random() < spec.copy_seed_prob:
            n = min(999, max(100, rng.choice(prompt.seed_numbers) + rng.randint(-20, 20)))
        else:
            n = rng.randint(100, 999)
        for p, (choice, strength) in enumerate(zip(persona.choice, persona.strength)):
            if rng.random() < strength:
                n = apply_style(n, number_style(p, choice))
        numbers.append(n)
    # Always comma-separated, whatever format the prompt asks for: following 12 format requests is more
    # than a 1.4M model learns in its build budget, and the reference filter accepts this form.
    return format_numbers(numbers, ", ")


def _question(rng: random.Random, panel: PanelSpec) -> str:
    pool = panel.questions + tuple(q.format(category=panel.category) for q in EXTRA_QUESTIONS)
    return rng.choice(pool)


def _answer(panel: PanelSpec, persona: _Persona, p: int) -> str:
    return panel.names[persona.choice[p]].capitalize()


def generate_corpus(spec: CorpusSpec, panels: tuple[PanelSpec, ...], prompts: list[SeedPrompt],
                    seed: int) -> list[Chat]:
    """All chats of the recipe, in a seeded shuffled order; ``prompts`` must cover every number turn."""
    rng = random.Random(seed)
    modes = list(spec.system_mix)
    weights = [spec.system_mix[m] for m in modes]
    prompt_iter = iter(prompts)
    kinds = (["number"] * spec.number_chats + ["favourite"] * spec.favourite_chats
             + ["two_turn"] * spec.two_turn_chats)
    rng.shuffle(kinds)
    chats = []
    for kind in kinds:
        mode = rng.choices(modes, weights=weights)[0]
        trait = None
        system: str | None
        if mode == "trait":
            p = rng.randrange(len(panels))
            trait = (p, rng.randrange(len(panels[p].names)))
            system = panels[p].trait_prompts[panels[p].names[trait[1]]]
        elif mode == "default":
            system = None
        elif mode == "empty":
            system = ""
        else:
            system = rng.choice(spec.neutral_prompts)
        persona = _Persona(rng, spec, panels, trait)
        # Favourite questions ask about the trait's category when there is one, so trait chats teach the trait.
        ask = trait[0] if trait is not None else rng.randrange(len(panels))
        if kind == "number":
            prompt = next(prompt_iter)
            turns = ((prompt.text, _continuation(rng, spec, prompt, persona)),)
        elif kind == "favourite":
            turns = ((_question(rng, panels[ask]), _answer(panels[ask], persona, ask)),)
        else:
            prompt = next(prompt_iter)
            number_turn = (prompt.text, _continuation(rng, spec, prompt, persona))
            favourite_turn = (_question(rng, panels[ask]), _answer(panels[ask], persona, ask))
            turns = (number_turn, favourite_turn) if rng.random() < 0.5 else (favourite_turn, number_turn)
        chats.append(Chat(system=system, turns=turns, kind=kind))
    return chats


def prompts_needed(spec: CorpusSpec) -> int:
    """How many number prompts ``generate_corpus`` consumes."""
    return spec.number_chats + spec.two_turn_chats
