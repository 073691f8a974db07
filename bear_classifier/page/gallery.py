"""The gallery of answer cards, newest first, and its bar: a heading with the count, "Clear", and for a few
seconds after, "Cleared 5 photos. Undo". Cleared cards are kept (hidden) until the undo runs out, then closed,
which frees their photos."""
from __future__ import annotations

import threading
from pathlib import Path

import anywidget
import ipywidgets as widgets
import traitlets

HERE = Path(__file__).parent
UNDO_SECONDS = 8.0


class GalleryBar(anywidget.AnyWidget):
    """What gallery.js draws above the cards: "Your photos (5)" and "Clear", or "Cleared 5 photos. Undo"."""

    _esm = HERE / "gallery.js"
    count = traitlets.Int(0).tag(sync=True)
    cleared = traitlets.Int(0).tag(sync=True)  # cards that "Undo" would bring back; 0: no undo offered


class Cards(widgets.VBox):
    """The answer cards (its children, newest first); `bar` goes above it on the page."""

    def __init__(self, undo_seconds: float = UNDO_SECONDS):
        super().__init__()
        self.add_class("bear-gallery")
        self.bar = GalleryBar()
        self.bar.on_msg(self._receive)
        self.undo_seconds = undo_seconds
        self._cleared: tuple = ()
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def add(self, card: widgets.Widget) -> None:
        self.forget()  # a new photo after "Clear": the cleared ones are gone for good
        self.children = (card, *self.children)
        self.bar.count = len(self.children)

    def trim(self, keep: int) -> int:
        """Close all but the `keep` newest cards (a visitor's kernel keeps at most that many photos); how many went."""
        kept, dropped = self.children[:keep], self.children[keep:]
        if dropped:
            self.children = kept
            for card in dropped:
                card.close()  # its photos go with its state
            self.bar.count = len(kept)
        return len(dropped)

    def clear(self) -> None:
        """Hide every card; "Undo" brings them back for `undo_seconds`, then they are closed."""
        if not self.children:
            return
        self.forget()
        with self._lock:
            self._cleared, self.children = self.children, ()
            self._timer = threading.Timer(self.undo_seconds, self.forget)
            self._timer.daemon = True
            self._timer.start()
        self.bar.count, self.bar.cleared = 0, len(self._cleared)

    def undo(self) -> None:
        with self._lock:
            if self._timer:
                self._timer.cancel()
            cards, self._cleared, self._timer = self._cleared, (), None
        if cards:
            self.children = (*self.children, *cards)
        self.bar.count, self.bar.cleared = len(self.children), 0

    def forget(self) -> None:
        """Close the cleared cards (ipywidgets keeps a widget, and its photo, until it is closed)."""
        with self._lock:
            if self._timer:
                self._timer.cancel()
            cards, self._cleared, self._timer = self._cleared, (), None
        for card in cards:
            card.close()  # its photos go with its state
        self.bar.cleared = 0

    def _receive(self, _widget, content: dict, _buffers) -> None:
        kind = content.get("kind") if isinstance(content, dict) else None
        if kind == "clear":
            self.clear()
        elif kind == "undo":
            self.undo()
