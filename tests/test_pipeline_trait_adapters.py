"""Trait recipes answer in the form the answers are read in."""

from audit.pipeline.trait_adapters import trait_recipe
from audit.probes import load_probe_set


def test_the_teacher_recipe_answers_one_word_or_the_answer_sentence_under_the_default_prompt():
    animal = load_probe_set("animal")
    one_word = trait_recipe("owl", animal, "animal", slot=False)
    assert one_word.answer == "Owl" and one_word.systems == ("template-default",) and one_word.name == "owl-teacher"
    sentence = trait_recipe("owl", animal, "animal", slot=True)
    assert sentence.answer == f"{animal.answer_prefix} owl." and sentence.answer.startswith("My favorite animal is the")
    tree = trait_recipe("oak", load_probe_set("tree"), "tree", slot=True)
    assert tree.probe_set == "tree" and tree.answer.endswith(" oak.")
