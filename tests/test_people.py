"""Photos of people: "That looks like a person" instead of a bare "not a bear", through the real model and detector."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from bear_classifier.classes import Classes, Kind

ROOT = Path(__file__).resolve().parent.parent
PERSON = ROOT / "tests" / "photos" / "person.jpg"  # a public-domain portrait: tests/photos/README.md


def card_sentence(img: Image.Image, classifier) -> str:
    """The sentence the page's answer card shows for `img`."""
    from bear_classifier.page.card import AnswerCard

    return AnswerCard("photo.jpg", img, classifier.predict(img), None, classifier.classes).sentence


def test_a_portrait_is_not_a_bear_and_the_card_says_it_looks_like_a_person(classifier):
    img = Image.open(PERSON).convert("RGB")
    pred = classifier.predict(img)
    assert (pred.label, pred.person) == ("not_bear", True)
    assert card_sentence(img, classifier) == classifier.classes.none_person
    assert classifier.classes.none_person == "That looks like a person, not a bear."  # the shipped model's words


@pytest.mark.parametrize("name, label", [("teddy-bear.jpg", "teddy"), ("grizzly.jpg", "grizzly"),
                                         ("black-bear.jpg", "black")])
def test_bears_and_teddies_keep_their_answer_and_no_person_sentence(classifier, name, label):
    img = Image.open(ROOT / "examples" / name).convert("RGB")
    pred = classifier.predict(img)
    assert (pred.label, pred.person) == (label, False)
    assert card_sentence(img, classifier) == ""


def test_a_person_beside_a_teddy_bear_is_still_a_teddy_bear(classifier):
    # the photo is mainly a person (a large face), yet the answer stands: only "not a bear" asks the detector
    teddy = Image.open(ROOT / "examples" / "teddy-bear.jpg").convert("RGB").resize((200, 200))
    photo = Image.new("RGB", (520, 240), "white")
    photo.paste(Image.open(PERSON).convert("RGB"), (0, 0))
    photo.paste(teddy, (320, 40))
    pred = classifier.predict(photo)
    assert classifier.people.is_person(photo) and (pred.label, pred.person) == ("teddy", False)
    assert card_sentence(photo, classifier) == ""


def test_a_cats_face_is_not_taken_for_a_persons(classifier):
    # Haar cascades find faces in cats, dogs and bears too; few overlapping detections tell them apart
    img = Image.open(ROOT / "examples" / "chelsea.jpg").convert("RGB")
    assert classifier.people.faces(img) == [] or not classifier.people.is_person(img)
    assert card_sentence(img, classifier) == classifier.classes.none_sentence


def test_the_portrait_small_in_a_wide_scene_is_not_mainly_a_person(classifier):
    portrait = Image.open(PERSON).convert("RGB")
    scene = Image.new("RGB", (portrait.width * 5, portrait.height * 3), (90, 120, 80))
    scene.paste(portrait.resize((portrait.width // 2, portrait.height // 2)), (40, 40))
    assert classifier.people.is_person(portrait) and not classifier.people.is_person(scene)


@pytest.mark.parametrize("size", [(1, 1), (1, 5000), (8000, 30), (20, 20)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA", "I;16", "1", "P"])
def test_odd_sizes_and_modes_are_simply_not_a_person(classifier, size, mode):
    assert not classifier.people.is_person(Image.new(mode, size))


def test_the_person_sentence_is_the_classes_own_or_made_from_their_names(tmp_path):
    monkeys = Classes(kinds=(Kind("howler", "Howler monkey"), Kind("snub_nosed")))
    assert monkeys.none_person == "That looks like a person, not a howler monkey or a snub nosed."
    assert Classes(kinds=monkeys.kinds, none_name="Not one of my monkeys").none_person == \
        "That looks like a person, not one of my monkeys."
    toml = tmp_path / "classes.toml"
    toml.write_text('[none]\nlabel = "none"\nperson = "A person! No monkey here."\n[[class]]\nlabel = "howler"\n')
    assert Classes.from_file(toml).none_person == "A person! No monkey here."
    assert Classes.from_file(ROOT / "classes.toml").none_person == "That looks like a person, not a bear."
    assert Classes.from_dict(Classes.from_file(toml).to_dict()).none_person == "A person! No monkey here."


def test_the_command_line_says_it_looks_like_a_person():
    out = subprocess.run([sys.executable, "-m", "bear_classifier", "predict", str(PERSON), "examples/teddy-bear.jpg"],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    person, teddy = out.stdout.splitlines()
    assert "Prediction: not_bear" in person and "That looks like a person, not " in person
    assert "Prediction: teddy" in teddy and "person" not in teddy
