"""The corrections loop, without torch (a serving machine can run it): the photos visitors flagged, listed for
review, accepted (as they said, or relabelled) into the training photos with where they came from, rejected, or
forgotten everywhere; and FlagCleaner, a widget for doing it by eye in the spirit of fastai's ImageClassifierCleaner.

An accepted flag is copied to DATA/<label>/flag-<id>.jpg and listed in DATA/flags.csv (its provenance: the
flag, when it was made, which version answered what, when it was accepted), so `train --data DATA` learns from it
and a later `forget` can find every copy. `store` is a page.feedback.FeedbackStore."""
from __future__ import annotations

import csv
import logging
from datetime import datetime, timezone
from pathlib import Path

from .clean import write_review

log = logging.getLogger(__name__)
PROVENANCE = "flags.csv"
FIELDS = ["file", "label", "flag", "flagged", "model_version", "model_said", "probability", "accepted"]


def review_feedback(store, out: Path) -> tuple[Path, Path]:
    """The photos visitors flagged as wrong and nobody has reviewed yet, written to
    out/feedback/<their label>/flag-<id>.jpg and listed in out/feedback.csv and out/feedback.html (label = the visitor's
    answer, predicted = the model's).

    Decide on each with `review --feedback --accept ID` (and --accept-as, --reject, --delete), or with FlagCleaner.
    """
    out = Path(out)
    rows = []
    for flag in (f for f in store.all() if not f.review):
        path = out / "feedback" / flag.label / f"flag-{flag.id}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(flag.photo)
        rows.append(dict(file=path.relative_to(out).as_posix(), label=flag.label, predicted=flag.predicted,
                         probability=round(flag.probability, 4), loss=""))
    then = ("Decide on each: <code>python -m bear_classifier review --feedback --data DATA --accept ID</code> "
            "(or <code>--accept-as ID=LABEL</code>, <code>--reject ID</code>, <code>--delete ID</code>), where ID is "
            "the number in its file's name.")
    return write_review(rows, out, out, then, name="feedback")


def _flag(store, flag_id: int):
    for flag in store.all():
        if flag.id == flag_id:
            return flag
    raise ValueError(f"There is no flag {flag_id} in the feedback store (`review --feedback` lists them).")


def _rows(data: Path) -> list[dict]:
    try:
        with open(Path(data) / PROVENANCE, newline="") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        return []


def _write(data: Path, rows: list[dict]) -> None:
    path = Path(data) / PROVENANCE
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, FIELDS)
        w.writeheader()
        w.writerows(rows)
    tmp.replace(path)


def accept(store, flag_id: int, data: Path, labels: list[str], label: str | None = None) -> Path:
    """Accept flag `flag_id` as the visitor said, or as `label`: its photo joins DATA/<label>/ with its provenance."""
    flag = _flag(store, flag_id)
    label = label or flag.label
    if label not in labels:
        raise ValueError(f"{label!r} is not one of the classes ({', '.join(labels)}).")
    _remove_copies(data, flag_id)  # relabelling an accepted flag moves its copy
    path = Path(data) / label / f"flag-{flag.id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(flag.photo)
    store.set_review(flag.id, "accepted", label)
    rows = [r for r in _rows(data) if r["flag"] != str(flag.id)]
    rows.append(dict(file=path.relative_to(data).as_posix(), label=label, flag=flag.id,
                     flagged=flag.created.isoformat(timespec="seconds"), model_version=flag.model_version,
                     model_said=flag.predicted, probability=round(flag.probability, 4),
                     accepted=datetime.now(timezone.utc).isoformat(timespec="seconds")))
    _write(data, rows)
    log.info("flag %d accepted as %s: %s", flag.id, label, path)
    return path


def reject(store, flag_id: int, data: Path | None = None) -> None:
    """Reject flag `flag_id`: kept in the store as rejected (not evaluated on, not trained on); a copy already in the
    training photos is removed."""
    _flag(store, flag_id)
    store.set_review(flag_id, "rejected")
    if data is not None:
        _remove_copies(data, flag_id)


def forget(store, flag_id: int, data: Path | None = None) -> list[str]:
    """Delete flag `flag_id` everywhere: its row and photo in the store, its copy in the training photos and its
    provenance line. What was deleted, in words."""
    gone = [f"flag {flag_id} in the feedback store"] if store.forget(flag_id) else []
    if data is not None:
        gone += _remove_copies(data, flag_id)
    if not gone:
        raise ValueError(f"There is no flag {flag_id} in the store or in {data}: nothing was deleted.")
    return gone


def _remove_copies(data: Path, flag_id: int) -> list[str]:
    data, gone = Path(data), []
    for path in data.glob(f"*/flag-{flag_id}.jpg"):
        path.unlink()
        gone.append(path.relative_to(data).as_posix())
    rows = _rows(data)
    kept = [r for r in rows if r["flag"] != str(flag_id)]
    if len(kept) != len(rows):
        _write(data, kept)
        gone.append(f"its line in {PROVENANCE}")
    return gone


class FlagCleaner:
    """The flags not yet reviewed, one at a time: the photo, what the model (which version) said, what the visitor
    said, and Accept, "Accept as" another class, Reject, Delete. Show `.widget` in a notebook."""

    def __init__(self, store, data: Path, labels: list[str]):
        import ipywidgets as widgets

        self.store, self.data, self.labels = store, Path(data), list(labels)
        self.image = widgets.Image(format="jpeg", layout=widgets.Layout(max_width="320px"))
        self.about, self.said = widgets.HTML(), widgets.HTML()
        self.relabel = widgets.Dropdown(options=self.labels, description="Accept as")
        buttons = {name: widgets.Button(description=name) for name in ("Accept", "Accept as", "Reject", "Delete")}
        buttons["Accept"].on_click(lambda _: self.decide("accept"))
        buttons["Accept as"].on_click(lambda _: self.decide("accept", self.relabel.value))
        buttons["Reject"].on_click(lambda _: self.decide("reject"))
        buttons["Delete"].on_click(lambda _: self.decide("delete"))
        self.buttons = buttons
        self.widget = widgets.VBox([self.about, self.image, self.said, widgets.HBox(
            [buttons["Accept"], self.relabel, buttons["Accept as"], buttons["Reject"], buttons["Delete"]])])
        self.show()

    def pending(self) -> list:
        return [f for f in self.store.all() if not f.review]

    def show(self) -> None:
        pending = self.pending()
        self.current = pending[0] if pending else None
        for button in self.buttons.values():
            button.disabled = self.current is None
        if self.current is None:
            self.about.value, self.said.value, self.image.value = "<p>No flagged photo is waiting for review.</p>", "", b""
            return
        f = self.current
        self.about.value = f"<p>Flag {f.id} of {len(pending)} waiting ({f.created:%Y-%m-%d %H:%M})</p>"
        self.image.value = f.photo
        self.said.value = (f"<p>Model version {f.model_version or 'unknown'} said <b>{f.predicted}</b> "
                           f"({f.probability:.0%}); the visitor says <b>{f.label}</b>.</p>")
        self.relabel.value = f.label if f.label in self.labels else self.labels[0]

    def decide(self, what: str, label: str | None = None) -> None:
        if self.current is None:
            return
        if what == "accept":
            accept(self.store, self.current.id, self.data, self.labels, label)
        elif what == "reject":
            reject(self.store, self.current.id, self.data)
        else:
            forget(self.store, self.current.id, self.data)
        self.show()
