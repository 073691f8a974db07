"""One photo's answer card, for people: the verdict in the classes' own words, the lesson's line, every
class's bar, where the model looked, and "That's wrong". An anywidget (card.js draws it), so that its
controls carry what screen readers and keyboards need (alt text, aria-pressed, a labelled radio group,
focus that moves on), which ipywidgets' buttons can't."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import anywidget
import traitlets
from PIL import Image

from ..classes import Classes, with_article
from ..inference.heatmap import heatmap_image, jpeg, overlay
from ..inference.predict import Prediction, served_classes

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
THUMB_SIDE = 320
SURE = 0.8  # below this the card says it is not sure, and names the runner-up
NAME_CHARS = 32  # longer file names are shortened in the middle (the full one stays in a tooltip)
# On "Not a bear" a map would point at whatever looked least like a bear: the background, mostly.
NO_MAP = "No map for “{name}”: the model found nothing it knows here, so there is nowhere to point."

FlagHandler = Callable[[str | None], str]  # on_flag(label) stores or replaces, on_flag(None) removes; a sentence


def thumbnail(img: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    small = img.copy()
    small.thumbnail((side, side))
    return small


def percent(p: float) -> str:
    """A whole percentage that never claims certainty: 0.9871 → "99%", 0.9999 → ">99%", 0.001 → "<1%"."""
    if p > 0.995:
        return ">99%"
    if p < 0.005:
        return "<1%"
    return f"{round(100 * p)}%"


def _maybe(label: str, p: float, classes: Classes) -> str:
    """"a grizzly bear (62%)", "an otter (40%)", "pants (33%)", "not a bear (31%)"."""
    words = classes.name(label)
    words = words[:1].lower() + words[1:]
    if label != classes.none_label:
        words = with_article(words)
    return f"{words} ({percent(p)})"


def verdict(pred: Prediction, classes: Classes) -> str:
    """The answer in a person's words: "Grizzly bear · 99%", "Not a bear", or "Not sure: maybe a grizzly
    bear (62%), or a black bear (31%)"."""
    if pred.probability < SURE:
        first, second = sorted(pred.probs.items(), key=lambda kv: -kv[1])[:2]
        return f"Not sure: maybe {_maybe(*first, classes)}, or {_maybe(*second, classes)}"
    if pred.label == classes.none_label:
        return classes.name(pred.label)
    return f"{classes.name(pred.label)} · {percent(pred.probability)}"


def none_sentence(pred: Prediction, classes: Classes) -> str:
    """Why there is no answer, on a sure "none of these": the person sentence where the photo is mainly a person."""
    if pred.label != classes.none_label or pred.probability < SURE:
        return ""
    return classes.none_person if pred.person else classes.none_sentence


def short_name(name: str, limit: int = NAME_CHARS) -> str:
    """A long file name with its middle left out, so that it fits on one line of a phone."""
    if len(name) <= limit:
        return name
    tail = limit // 3
    return f"{name[:limit - tail - 1]}…{name[-tail:]}"


class Card(anywidget.AnyWidget):
    """What every card shows: the file's name, and either an answer or the sentence that says why not."""

    _esm = HERE / "card.js"
    name = traitlets.Unicode().tag(sync=True)
    short = traitlets.Unicode().tag(sync=True)
    error = traitlets.Unicode().tag(sync=True)

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, short=short_name(name), **kwargs)


class AnswerCard(Card):
    """A card in the gallery. `on_flag(label)` stores (or replaces) this card's "That's wrong" answer,
    `on_flag(None)` removes it; each returns the sentence the card shows. None: no "That's wrong"."""

    verdict = traitlets.Unicode().tag(sync=True)
    unsure = traitlets.Bool(False).tag(sync=True)
    lesson = traitlets.Unicode().tag(sync=True)  # the course's own line, str(pred)
    sentence = traitlets.Unicode().tag(sync=True)  # "That doesn't look like a bear." (or "a person") on "none of these"
    bars = traitlets.List().tag(sync=True)  # [[words, fraction, "62%"]], highest first
    photo = traitlets.Bytes().tag(sync=True)  # the thumbnail, JPEG
    overlay = traitlets.Bytes().tag(sync=True)  # the thumbnail lit where the model looked; empty when none
    legend = traitlets.Unicode().tag(sync=True)
    no_map = traitlets.Unicode().tag(sync=True)  # why there is no map, where there is none
    looked = traitlets.Bool(False).tag(sync=True)  # the map is shown
    choices = traitlets.List().tag(sync=True)  # [[label, words]]: the other answers; empty: no "That's wrong"
    chosen = traitlets.Unicode().tag(sync=True)  # the stored answer's label, "" when none
    reply = traitlets.Unicode().tag(sync=True)
    version = traitlets.Unicode().tag(sync=True)  # the model version that answered, in small print

    def __init__(self, name: str, img: Image.Image, pred: Prediction, on_flag: FlagHandler | None,
                 classes: Classes | None = None):
        classes = classes or served_classes()
        small = thumbnail(img)
        order = sorted(pred.probs.items(), key=lambda kv: -kv[1])
        super().__init__(
            name, verdict=verdict(pred, classes), unsure=pred.probability < SURE, lesson=str(pred),
            sentence=none_sentence(pred, classes),
            bars=[[classes.name(label), p, percent(p)] for label, p in order], photo=jpeg(small),
            version=getattr(pred, "version", ""),
            choices=[[label, classes.name(label)] for label in classes.vocab if label != pred.label]
            if on_flag else [])
        if pred.label == classes.none_label:
            self.no_map = NO_MAP.format(name=classes.name(pred.label))
        elif pred.heatmap is not None:
            self.overlay = jpeg(overlay(small, heatmap_image(pred.heatmap, small.size)))
            self.legend = f"Bright: what made it say “{classes.name(pred.label)}”; dark: what it ignored."
        self._on_flag = on_flag
        self.on_msg(self._receive)

    def _receive(self, _widget, content: dict, _buffers) -> None:
        kind = content.get("kind") if isinstance(content, dict) else None
        if kind == "flag" and content.get("label") in [label for label, _ in self.choices]:
            self.flag(content["label"])
        elif kind == "unflag" and self.chosen:
            self.flag(None)

    def flag(self, label: str | None) -> None:
        """Store `label` as what the photo really shows (replacing an earlier choice), or None: take it back."""
        if self._on_flag is None:
            return
        try:
            reply = self._on_flag(label) or ""
        except Exception:  # the store's own errors come back as sentences; anything else is logged, not shown
            log.exception("storing a correction failed")
            self.reply = "Sorry, your answer could not be stored right now. Please try again later."
            return
        with self.hold_sync():  # one message: the page redraws the choice from both, so a reply that came alone
            self.reply, self.chosen = reply, label or ""  # unticked the radio just ticked until the choice came


class ErrorCard(Card):
    """A card for a file that got no answer: its name and the sentence that says why."""

    def __init__(self, name: str, message: str):
        super().__init__(name, error=message)
        self.message = message
