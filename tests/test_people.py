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
    # the photo is mainly a person (a large face), yet the answer stands: the teddy has a corner of its own
    teddy = Image.open(ROOT / "examples" / "teddy-bear.jpg").convert("RGB").resize((200, 200))
    photo = Image.new("RGB", (520, 240), "white")
    photo.paste(Image.open(PERSON).convert("RGB"), (0, 0))
    photo.paste(teddy, (320, 40))
    pred = classifier.predict(photo)
    assert classifier.people.is_person(photo) and (pred.label, pred.person) == ("teddy", False)
    assert card_sentence(photo, classifier) == ""


def teddy_in_the_faces_corner(side: int, opacity: float) -> Image.Image:
    """The portrait with a teddy blended into its bottom-right corner, the corner view that also holds the face's
    centre: faint, it shows a little teddy as a lace collar in warm light did; opaque, it is a teddy held up."""
    photo = Image.open(PERSON).convert("RGB")
    box = (photo.width - side, photo.height - side, photo.width, photo.height)
    teddy = Image.open(ROOT / "examples" / "teddy-bear.jpg").convert("RGB").resize((side, side))
    photo.paste(Image.blend(photo.crop(box), teddy, opacity), box[:2])
    return photo


CORNERS = {"top left": [0, 0, 4 / 7, 4 / 7], "top right": [3 / 7, 0, 1, 4 / 7], "bottom left": [0, 3 / 7, 4 / 7, 1],
           "bottom right": [3 / 7, 3 / 7, 1, 1]}  # the gate's corner views (export.onnx's metadata)


@pytest.mark.parametrize("x, y, corners", [
    (0.2, 0.2, {"top left", "bottom left"}),  # a face high on the left: its body runs down the left corners
    (0.2, 0.8, {"bottom left"}),  # low on the left: nothing of it above
    (0.8, 0.3, {"top right", "bottom right"}),
    (0.35, 0.3, set(CORNERS)),  # off-centre, but its width reaches into the right corners too
    (0.5, 0.3, set(CORNERS)),  # a portrait's face, in the middle: every corner shows the person
])
def test_the_corners_that_show_a_person_are_those_of_the_face_and_the_body_below_it(x, y, corners):
    from bear_classifier.inference.people import Face

    face = Face(x - 0.1, y - 0.1, 0.2, 0.2)
    assert {name for name, box in CORNERS.items() if face.holds_person(box)} == corners


def test_the_served_model_says_where_its_views_lie(classifier):
    assert classifier.gate_views["boxes"] == [[0, 0, 1, 1]] + [pytest.approx(b) for b in CORNERS.values()]
    assert classifier.gate_views["bound"] == 9


def faint_teddies(classifier) -> list[Image.Image]:
    """Composites let in by the corner that shows the person alone, short of the gate's bound. Where a teddy turns
    from invisible to plain to the gate is a narrow band of sizes and opacities, so it is searched for, not fixed."""
    found = []
    for side in range(110, 150, 5):
        for opacity in (0.55, 0.6, 0.65):
            photo = teddy_in_the_faces_corner(side, opacity)
            views = classifier.run(photo)[2]  # whole photo, then the corners: top left, top right, bottom left, right
            if max(views[:4]) < 0 < views[4] < classifier.gate_views["bound"]:
                found.append(photo)
    return found


def test_a_little_teddy_in_the_corner_that_shows_the_person_does_not_make_a_teddy(classifier):
    photos = faint_teddies(classifier)
    assert photos, "no faint teddy found: the band of sizes and opacities moved"
    for photo in photos:
        assert classifier.vocab[int(classifier.probabilities(photo).argmax())] == "teddy"  # the network, by that corner
        pred = classifier.predict(photo)
        assert (pred.label, pred.person) == ("not_bear", True)
        assert pred.probs["not_bear"] > 0.99 and abs(sum(pred.probs.values()) - 1) < 1e-5
        assert card_sentence(photo, classifier) == classifier.classes.none_person


def test_a_teddy_in_a_corner_clear_of_the_person_counts_short_of_the_bound(classifier):
    # the portrait at the left of a wider photo, a teddy in the top right corner: only that corner lets it in
    photo = Image.new("RGB", (560, 240), "white")
    photo.paste(Image.open(PERSON).convert("RGB"), (0, 0))
    photo.paste(Image.open(ROOT / "examples" / "teddy-bear.jpg").convert("RGB").resize((120, 120)), (440, 0))
    views = classifier.run(photo)[2]
    assert classifier.people.is_person(photo) and views[0] < 0 < views[2] < classifier.gate_views["bound"]
    assert classifier.predict(photo).label == "teddy"


def test_the_lessons_export_pkl_answers_people_as_the_served_file_does(classifier):
    from bear_classifier.model.learner import LessonClassifier

    lesson = LessonClassifier.load()
    for photo in [Image.open(PERSON).convert("RGB"), teddy_in_the_faces_corner(120, 1.0)] + faint_teddies(classifier):
        served, pkl = classifier.predict(photo), lesson.predict(photo)
        assert (pkl.label, pkl.person) == (served.label, served.person)
        assert abs(pkl.probability - served.probability) < 1e-3


@pytest.mark.parametrize("side, opacity", [(90, 1.0), (120, 1.0), (130, 0.7)])
def test_a_teddy_held_up_beside_the_face_is_still_a_teddy(classifier, side, opacity):
    # the same corner, the teddy plain in it: the gate is as sure as it can be there, so the corner counts
    photo = teddy_in_the_faces_corner(side, opacity)
    assert classifier.people.is_person(photo)
    pred = classifier.predict(photo)
    assert (pred.label, pred.person) == ("teddy", False) and pred.probability > 0.9


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
    outfit = Classes(kinds=(Kind("hat", "Hat"), Kind("shoes", "Pair of shoes"), Kind("pants", "Pants")))
    assert outfit.none_person == "That looks like a person, not a hat, a pair of shoes or pants."
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
