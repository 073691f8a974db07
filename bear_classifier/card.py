"""One photo's answer card: upright thumbnail, the lesson's line, every class's bar, where the model looked, "That's wrong"."""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as widgets
from PIL import Image

from .heatmap import heatmap_image, jpeg, overlay
from .predict import Prediction

THUMB_SIDE = 320
NICE = {"black": "black bear", "grizzly": "grizzly", "teddy": "teddy bear", "not_bear": "not a bear"}
NOT_A_BEAR = "This doesn't look like a bear to me. Try a photo of a grizzly, a black bear or a teddy bear."


def thumbnail(img: Image.Image, side: int = THUMB_SIDE) -> Image.Image:
    small = img.copy()
    small.thumbnail((side, side))
    return small


def bars_html(probs: dict[str, float]) -> str:
    """Every class's probability as a horizontal bar, highest first."""
    rows = []
    for label, p in sorted(probs.items(), key=lambda kv: -kv[1]):
        rows.append(
            f'<div class="bear-bar"><span class="bear-bar-label">{html.escape(NICE.get(label, label))}</span>'
            f'<span class="bear-bar-track"><span style="width:{100 * p:.1f}%"></span></span>'
            f'<span class="bear-bar-value">{p:.4f}</span></div>'
        )
    return "".join(rows)


class Card(widgets.Box):
    """What both cards share: closing one closes the widgets inside it, whose state holds its photos."""

    def close_all(self) -> None:
        stack = [self]
        while stack:
            widget = stack.pop()
            stack += [w for w in getattr(widget, "children", ()) if isinstance(w, widgets.Widget)]
            widget.close()


def _title(name: str) -> str:
    return f'<div class="bear-card-name">{html.escape(name)}</div>'


class AnswerCard(Card):
    """A card in the gallery. `on_flag(label)` stores a "That's wrong" answer and returns the sentence to show."""

    def __init__(self, name: str, img: Image.Image, pred: Prediction, on_flag: Callable[[str], str] | None):
        small = thumbnail(img)
        self.photo_jpeg = jpeg(small)
        self.image = widgets.Image(value=self.photo_jpeg, format="jpeg", layout=widgets.Layout(max_width="100%"))
        self.image.add_class("bear-thumb")
        verdict = "" if pred.is_bear else f'<p class="bear-not-bear">{NOT_A_BEAR}</p>'
        self.answer = widgets.HTML(f'{_title(name)}<p class="bear-answer"><b>{html.escape(str(pred))}</b></p>'
                                   f'{verdict}{bars_html(pred.probs)}')
        buttons = []
        if pred.heatmap is not None:
            self.overlay_jpeg = jpeg(overlay(small, heatmap_image(pred.heatmap, small.size)))
            self.looked = widgets.ToggleButton(description="Where it looked", tooltip=(
                f"Brighter = more evidence for '{NICE.get(pred.label, pred.label)}'"))
            self.looked.observe(self._toggle_heatmap, names="value")
            buttons.append(self.looked)
        self.feedback = widgets.VBox()
        if on_flag is not None:
            self.wrong = widgets.Button(description="That's wrong")
            self.wrong.on_click(lambda _: self._ask(on_flag))
            buttons.append(self.wrong)
        tools = widgets.HBox(buttons, layout=widgets.Layout(flex_flow="row wrap"))
        super().__init__([self.image, widgets.VBox([self.answer, tools, self.feedback])])
        self.add_class("bear-card")

    def _toggle_heatmap(self, change) -> None:
        self.image.value = self.overlay_jpeg if change["new"] else self.photo_jpeg

    def _ask(self, on_flag: Callable[[str], str]) -> None:
        self.wrong.disabled = True
        choices = widgets.ToggleButtons(options=[(NICE[k], k) for k in NICE], value=None,
                                        description="It's a", style={"button_width": "auto"})
        choices.add_class("bear-choices")
        reply = widgets.HTML('<span class="bear-note">Your answer and this photo (without its metadata) will be '
                             'kept to improve the model.</span>')

        def chosen(change):
            if change["new"] is None:
                return
            choices.disabled = True
            reply.value = f'<span class="bear-note">{html.escape(on_flag(change["new"]))}</span>'

        choices.observe(chosen, names="value")
        self.feedback.children = [choices, reply]


class ErrorCard(Card):
    """A card for a file that got no answer: its name and the sentence that says why."""

    def __init__(self, name: str, message: str):
        self.message = message
        super().__init__([widgets.HTML(f'{_title(name)}<p class="bear-error">{html.escape(message)}</p>')])
        self.add_class("bear-card")
        self.add_class("bear-card-error")
