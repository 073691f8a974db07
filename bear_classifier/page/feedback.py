""""That's wrong": the photos visitors flag, with what the model said and what they say it is (the answers log, in the
same database, is answers.py's).

Nothing is stored unless a visitor presses the button. The store is a database URL (SQLAlchemy):
an SQLite file by default (WAL mode: every visitor's kernel writes to it at once), PostgreSQL where
several servers share it. The photo is re-encoded from its pixels, so no EXIF metadata (a phone
photo's GPS position) is ever stored.
"""
from __future__ import annotations

import io
import logging
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from PIL import Image

from .. import environment
from ..inference.images import KEPT_SIDE
from .answers import DEFAULT_DAYS, DEFAULT_ROWS, AnswersLog
from .tables import default_db, flags, open_store

log = logging.getLogger(__name__)
DEFAULT_MAX_MB = 500
VISITOR_SHARE = 0.05  # one visitor (kernel) may fill at most this share of the store, so one can't lock out the rest
PER_MINUTE = 10  # changes a visitor may make in a minute: a person corrects a few cards, a script thousands


class NoStore(FileNotFoundError):
    """The store a command would read isn't there; str(error) says where it was looked for and what to set."""


class FeedbackError(RuntimeError):
    """The flag could not be stored; str(error) is a sentence for the visitor."""


@dataclass
class Flag:
    id: int
    created: datetime
    predicted: str
    probability: float
    label: str
    model_sha256: str
    photo: bytes
    model_version: str = ""
    review: str = ""


def clean_jpeg(img: Image.Image, side: int = KEPT_SIDE) -> bytes:
    """The photo re-encoded from its pixels alone: no EXIF, no GPS, no comments, at most `side` pixels."""
    small = Image.frombytes("RGB", img.size, img.convert("RGB").tobytes())  # pixels only, no info dict
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


UNREACHABLE = "Sorry, your answer could not be stored right now. Please try again later."


class FeedbackStore:
    """Flags in a database at `url`, refused with a sentence once the photos take `max_mb`.

    One store per kernel, so per visitor: its rows may take at most `visitor_share` of `max_mb`, and
    it makes at most `per_minute` changes a minute (None: no limit, for scripts and tests).
    """

    def __init__(self, url: str, max_mb: float = DEFAULT_MAX_MB, visitor_share: float = VISITOR_SHARE,
                 per_minute: int | None = PER_MINUTE, answers_days: float = DEFAULT_DAYS,
                 answers_rows: int = DEFAULT_ROWS):
        self.url, self.max_bytes = url, int(max_mb * 2**20)
        self.share_bytes, self.per_minute = int(self.max_bytes * visitor_share), per_minute
        self.mine: dict[int, int] = {}  # this visitor's rows: id → photo bytes
        self._changes: deque[float] = deque()
        self.engine = open_store(url)
        self.answers_log = AnswersLog(self.engine, answers_days, answers_rows)  # in the same database

    @classmethod
    def from_env(cls) -> "FeedbackStore | None":
        """The store the environment asks for, or None where storing is turned off (BEAR_FEEDBACK=off).

        BEAR_FEEDBACK_URL: a database URL (postgresql+psycopg://...); else BEAR_FEEDBACK_DB: an
        SQLite file (default: feedback.db in the working folder, the notebook's); BEAR_FEEDBACK_MAX_MB caps its photos.
        """
        if not environment.feedback_on():
            return None
        return cls(environment.feedback_url(default_db()), environment.feedback_max_mb(DEFAULT_MAX_MB),
                   answers_days=environment.answers_days(DEFAULT_DAYS),
                   answers_rows=environment.answers_rows(DEFAULT_ROWS))

    @classmethod
    def to_read(cls) -> "FeedbackStore | None":
        """The store the page writes, for the commands that read it (review --feedback, the promotion gate): as
        from_env, but an SQLite file that isn't there is NoStore saying where it was looked for, not a new empty
        store that has nothing to review."""
        file = environment.feedback_file(default_db())
        if environment.feedback_on() and file is not None and not file.exists():
            raise NoStore(f"There is no feedback store at {file}: run this from the folder the page runs from, or "
                          f"name the page's store with BEAR_FEEDBACK_DB (or BEAR_FEEDBACK_URL).")
        return cls.from_env()

    def add(self, img: Image.Image, predicted: str, probability: float, label: str, model_sha256: str,
            model_version: str = "") -> int:
        """Store one flag; its id. Raises FeedbackError (a sentence) when the store, or this visitor's share of it,
        is full, when this visitor changes too much too fast, or when the database can't be reached."""
        photo = clean_jpeg(img)
        self._count_change()
        with self._db() as db:
            used = db.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(flags.c.photo)), 0))).scalar()
            if used + len(photo) > self.max_bytes:
                raise FeedbackError("Thanks, but the feedback store is full, so this photo was not kept.")
            if sum(self.mine.values()) + len(photo) > self.share_bytes:
                raise FeedbackError("Thanks, but you have stored as many photos as one visitor may, "
                                    "so this one was not kept.")
            row = db.execute(flags.insert().values(
                created=datetime.now(timezone.utc), name="", predicted=predicted, probability=probability,
                label=label, model_sha256=model_sha256, photo=photo,
                model_version=model_version)).inserted_primary_key[0]
        self.mine[row] = len(photo)
        return row

    def update(self, row: int, label: str) -> None:
        """Change the label of this visitor's flag `row` (the same row: a correction is changed, never multiplied)."""
        self._count_change()
        with self._db() as db:
            db.execute(flags.update().where(flags.c.id == row).values(label=label))

    def delete(self, row: int) -> None:
        """Remove this visitor's flag `row` (undo)."""
        self._count_change()
        with self._db() as db:
            db.execute(flags.delete().where(flags.c.id == row))
        self.mine.pop(row, None)

    def all(self) -> list[Flag]:
        with self.engine.connect() as db:
            columns = [c for c in flags.c if c.name != "name"]
            return [Flag(**row._mapping) for row in db.execute(sa.select(*columns).order_by(flags.c.id))]

    def set_review(self, row: int, review: str, label: str | None = None) -> None:
        """The deployer's decision on flag `row`: "accepted" (with `label`, where they relabel it) or "rejected"."""
        values = dict(review=review) if label is None else dict(review=review, label=label)
        with self.engine.begin() as db:
            if not db.execute(flags.update().where(flags.c.id == row).values(**values)).rowcount:
                raise ValueError(f"There is no flag {row} in the store.")

    def forget(self, row: int) -> bool:
        """Delete flag `row` and its photo from the store, whoever made it; False if there was none."""
        with self.engine.begin() as db:
            return bool(db.execute(flags.delete().where(flags.c.id == row)).rowcount)

    def _count_change(self) -> None:
        if self.per_minute is None:
            return
        now = time.monotonic()
        while self._changes and now - self._changes[0] > 60:
            self._changes.popleft()
        if len(self._changes) >= self.per_minute:
            raise FeedbackError("That's a lot of changes in a minute: please wait a moment and try again.")
        self._changes.append(now)

    @contextmanager
    def _db(self):
        try:
            with self.engine.begin() as db:
                yield db
        except sa.exc.SQLAlchemyError:
            log.exception("the feedback store failed")
            raise FeedbackError(UNREACHABLE) from None


class Correction:
    """The one stored correction a card may have, as the card's "That's wrong" callback: `correction(label)`
    stores it, or replaces the one stored (the same row); `correction(None)` removes it. Returns the sentence
    to show on the card. It keeps the card's small copy of the photo, never the photo itself."""

    def __init__(self, store: FeedbackStore, small: Image.Image, pred, classes, model_sha256: str):
        # the version comes with the answer (Prediction.version), so a correction names the one that answered
        self.store, self.small, self.pred, self.classes, self.sha256 = store, small, pred, classes, model_sha256
        self.row: int | None = None

    def __call__(self, label: str | None) -> str:
        if label is None:
            return self._undo()
        if not isinstance(label, str) or label not in self.classes.vocab:
            return "That isn't one of the answers this app knows, so nothing was stored."
        if label == self.pred.label:
            return f"That's what the model said ({self.classes.name(label)}): choose another answer to correct it."
        try:
            if self.row is None:
                self.row = self.store.add(self.small, self.pred.label, self.pred.probability, label, self.sha256,
                                          getattr(self.pred, "version", ""))
                from .. import metrics

                metrics.corrected(self.pred.label, label, getattr(self.pred, "version", "") or self.sha256[:8])
            else:
                self.store.update(self.row, label)
        except FeedbackError as e:
            return str(e)
        except Exception:  # a card's button must answer with a sentence whatever happens; details in the log
            log.exception("storing a correction failed")
            return UNREACHABLE
        log.info("flag %d: the model said %s, the visitor says %s", self.row, self.pred.label, label)
        return f"Thanks! Stored as “{self.classes.name(label)}”."

    def _undo(self) -> str:
        if self.row is None:
            return "Nothing was stored for this photo."
        try:
            self.store.delete(self.row)
        except FeedbackError as e:
            return str(e)
        log.info("flag %d removed by the visitor", self.row)
        self.row = None
        return "Your correction was removed: nothing is stored for this photo."
