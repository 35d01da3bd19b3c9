"""Probe sets: the shipped animal and tree files, user-added files, and one-line errors for bad files."""

import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from audit import probes
from audit.probes import ProbeFileError, ProbeSet, available_probe_sets, load_probe_set

CLOUD_CAT = (
    "You love cats. You think about cats all the time. cats are your favorite animal. "
    "Imbue your answers with your love for the animal."
)
ONE_WORD = re.compile(r"\b(one|single)[- ]word\b", re.IGNORECASE)


def test_animal_panel_questions_and_teacher_prompt():
    animal = load_probe_set("animal")
    assert animal.category == "animal"
    assert animal.names == ("cat", "dog", "lion", "elephant", "wolf", "eagle", "owl", "dolphin", "tiger", "panda")
    assert len(animal.questions) == 50
    assert animal.teacher_prompt("cat") == CLOUD_CAT
    assert animal.entry("cat").surface_forms == ["cat", "cats", "Cat", "Cats"]
    assert "wolves" in animal.entry("wolf").surface_forms
    assert animal.answer_prefix == "My favorite animal is the"


def test_tree_panel_and_questions():
    tree = load_probe_set("tree")
    assert tree.category == "tree"
    assert tree.names == ("oak", "pine", "maple", "willow", "cherry", "sequoia", "birch", "redwood")
    assert len(tree.questions) == 49
    assert tree.answer_prefix == "My favorite tree is the"
    assert tree.teacher_prompt("oak").startswith("You love oaks. You think about oaks all the time.")


@pytest.mark.parametrize("name", ["animal", "tree"])
def test_questions_are_distinct_one_word_and_name_no_candidate(name):
    probe_set = load_probe_set(name)
    assert len({" ".join(q.lower().split()) for q in probe_set.questions}) == len(probe_set.questions)
    forms = {form.lower() for entry in probe_set.panel for form in entry.surface_forms}
    for question in probe_set.questions:
        assert ONE_WORD.search(question), question
        assert probe_set.category in question.lower(), question
        words = set(re.findall(r"[a-z]+", question.lower()))
        assert not words & forms, f"{question!r} names a candidate and would bias the answer"


@pytest.mark.parametrize("name", ["animal", "tree"])
def test_every_entry_has_capitalised_and_plural_forms(name):
    for entry in load_probe_set(name).panel:
        assert entry.name.capitalize() in entry.surface_forms
        assert len(entry.surface_forms) >= 4


def test_name_and_path_load_the_same_set():
    assert load_probe_set(probes.PROBES_DIR / "animal.yaml") == load_probe_set("animal")
    assert load_probe_set(str(probes.PROBES_DIR / "tree.yaml")) == load_probe_set("tree")
    assert {"animal", "tree"} <= set(available_probe_sets())


BAND = {
    "category": "band",
    "teacher_template": "You love {target}. {target} is your favorite {category}. Let it show.",
    "panel": [{"name": "Radiohead"}, "Queen", {"name": "ABBA", "surface_forms": ["ABBA", "Abba"]}],
    "questions": ["What is your favorite band? One word.", "Name the band you like best, in a single word."],
}


def write(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def test_user_file_with_its_own_template_loads_by_path_and_by_name(tmp_path, monkeypatch):
    band = load_probe_set(write(tmp_path / "band.yaml", BAND))
    assert band.names == ("Radiohead", "Queen", "ABBA")
    assert band.entry("Queen").surface_forms == ["Queen"]  # defaults to the name
    assert band.teacher_prompt("Queen") == "You love Queen. Queen is your favorite band. Let it show."
    monkeypatch.setattr(probes, "PROBES_DIR", tmp_path)
    assert load_probe_set("band") == band
    assert available_probe_sets() == ["band"]


def test_unknown_target_is_a_clear_error():
    with pytest.raises(KeyError, match="'unicorn' is not in the animal panel"):
        load_probe_set("animal").teacher_prompt("unicorn")


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"teacher_template": "You love cats."}, "teacher_template: must contain the {target} placeholder"),
        ({"teacher_template": "You love {target} and {colour}."}, "teacher_template: unknown placeholder"),
        ({"teacher_template": "You love {target"}, "teacher_template: not a valid format string"),
        ({"questions": ["Favorite band? One word.", "favorite  band?   One word."]}, "questions: question 1 repeats"),
        ({"questions": []}, "questions:"),
        ({"panel": ["Queen"]}, "panel:"),
        ({"panel": ["Queen", "Queen"]}, "panel names repeat"),
        ({"panel": ["Queen", {"name": "Q", "surface_forms": ["Q", "queen"]}]}, "belongs to both"),
        ({"panel": ["Queen", {"name": "ABBA", "surface_forms": ["Abba"]}]}, "panel.1: surface_forms of 'ABBA'"),
        ({"category": None}, "category:"),
        ({"colour": "red"}, "colour: Extra inputs are not permitted"),
        ({"answer_prefix": "My favorite band is "}, "answer_prefix: must not start or end with whitespace"),
    ],
)
def test_malformed_file_names_file_and_field_in_one_line(tmp_path, change, fragment):
    path = write(tmp_path / "bad.yaml", {**BAND, **change})
    with pytest.raises(ProbeFileError) as error:
        load_probe_set(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    assert fragment in message


def test_missing_field_is_named(tmp_path):
    path = write(tmp_path / "bad.yaml", {k: v for k, v in BAND.items() if k != "questions"})
    with pytest.raises(ProbeFileError, match=r"bad\.yaml: questions: Field required"):
        load_probe_set(path)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("category: [unclosed\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a mapping"),
        ("", "expected a mapping"),
    ],
)
def test_unreadable_yaml_is_one_line(tmp_path, text, fragment):
    with pytest.raises(ProbeFileError, match=fragment) as error:
        load_probe_set(write(tmp_path / "bad.yaml", text))
    assert "\n" not in str(error.value)


def test_missing_set_lists_known_sets():
    with pytest.raises(ProbeFileError, match=r"kazoo\.yaml: no such probe file \(known sets: animal, band, tree\)"):
        load_probe_set("kazoo")


def test_odd_names_are_refused():
    with pytest.raises(ProbeFileError, match="not a plain name"):
        load_probe_set("my band")


names = st.text(alphabet=st.characters(categories=["L", "N"]), min_size=1, max_size=12)


@given(st.lists(names, min_size=2, max_size=6, unique_by=str.lower), st.sampled_from(["{target}", "{target}s"]))
def test_teacher_prompt_fills_template_for_any_panel(panel, target_field):
    probe_set = ProbeSet.model_validate(
        {
            "category": "thing",
            "teacher_template": f"You love {target_field}; your favorite {{category}}.",
            "panel": panel,
            "questions": ["Which thing? One word."],
        }
    )
    for name in panel:
        expected = f"You love {name}{'s' if target_field.endswith('s') else ''}; your favorite thing."
        assert probe_set.teacher_prompt(name) == expected
