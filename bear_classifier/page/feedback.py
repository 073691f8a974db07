""""That's wrong": the photos visitors flag, with what the model said and what they say it is; and the answers log.

Nothing is stored unless a visitor presses the button. The store is a database URL (SQLAlchemy):
an SQLite file by default (WAL mode: every visitor's kernel writes to it at once), PostgreSQL where
several servers share it. The photo is re-encoded from its pixels, so no EXIF metadata (a phone
photo's GPS position) is ever stored. The answers log, which the monitor page reads (monitor.ipynb), holds what
each answer said, how sure, when, and which model version: never the photo, its name or who sent it.
"""
from __future__ import annotations

import io
import logging
import queue
import threading
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

from .. import environment
from ..inference.images import KEPT_SIDE
from .tables import answers, connect_args, create_table, flags, metadata, sqlite_pragmas  # noqa: F401  metadata: tests

log = logging.getLogger(__name__)
DEFAULT_DB = Path(__file__).resolve().parents[2] / "feedback.db"
DEFAULT_MAX_MB = 500
VISITOR_SHARE = 0.05  # one visitor (kernel) may fill at most this share of the store, so one can't lock out the rest
PER_MINUTE = 10  # changes a visitor may make in a minute: a person corrects a few cards, a script thousands

DEFAULT_ANSWERS_DAYS = 30
# The answers log's newest rows kept: the API answers as fast as programs ask, up to ~100 answers a second on two cores,
# so days alone don't bound it. A million rows is about 60 MB of SQLite, and weeks of a busy page's answers.
DEFAULT_ANSWERS_ROWS = 1_000_000
PRUNE_EVERY = 3600.0  # seconds between two deletions of old answers by one kernel


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
                 per_minute: int | None = PER_MINUTE, answers_days: float = DEFAULT_ANSWERS_DAYS,
                 answers_rows: int = DEFAULT_ANSWERS_ROWS):
        self.url, self.max_bytes, self.answers_days = url, int(max_mb * 2**20), answers_days
        self.answers_rows = answers_rows
        self._pruned = -PRUNE_EVERY
        self.share_bytes, self.per_minute = int(self.max_bytes * visitor_share), per_minute
        self.mine: dict[int, int] = {}  # this visitor's rows: id → photo bytes
        self._changes: deque[float] = deque()
        self._answers: queue.Queue = queue.Queue()  # the answers log's rows, waiting for its writer
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self.engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args(url))
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", sqlite_pragmas)
        create_table(self.engine)

    @classmethod
    def from_env(cls) -> "FeedbackStore | None":
        """The store the environment asks for, or None where storing is turned off (BEAR_FEEDBACK=off).

        BEAR_FEEDBACK_URL: a database URL (postgresql+psycopg://...); else BEAR_FEEDBACK_DB: an
        SQLite file (default feedback.db next to the package); BEAR_FEEDBACK_MAX_MB caps its photos.
        """
        if not environment.feedback_on():
            return None
        return cls(environment.feedback_url(DEFAULT_DB), environment.feedback_max_mb(DEFAULT_MAX_MB),
                   answers_days=environment.answers_days(DEFAULT_ANSWERS_DAYS),
                   answers_rows=environment.answers_rows(DEFAULT_ANSWERS_ROWS))

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

    def answered(self, predicted: str, probability: float, model_version: str) -> None:
        """One row of the answers log (never the photo; rows older than `answers_days` go now and then), written on a
        thread of the store's own: a commit takes
        milliseconds (11.6 ms on SQLite, with its sync to disk: docs/production.md), which the next photo of a batch
        must not wait for."""
        row = dict(created=datetime.now(timezone.utc), model_version=model_version, predicted=predicted,
                   probability=probability)
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_answers, daemon=True, name="the answers log")
                self._writer.start()
        self._answers.put(row)

    def flush(self) -> None:
        """Wait until every answer logged so far is written (tests, benchmarks)."""
        self._answers.join()

    def _write_answers(self) -> None:
        while True:
            rows = [self._answers.get()]
            while not self._answers.empty():  # those that came meanwhile: one commit
                rows.append(self._answers.get_nowait())
            try:
                with self.engine.begin() as db:
                    db.execute(answers.insert(), rows)
                if time.monotonic() - self._pruned > PRUNE_EVERY:
                    self._pruned = time.monotonic()
                    self.prune_answers()
            except Exception:  # the answers are given; the log misses them, says so, and the writer goes on
                log.warning("%d answers could not be written to the answers log", len(rows), exc_info=True)
            for _ in rows:
                self._answers.task_done()

    def prune_answers(self) -> None:
        """Delete the answers log's rows older than `answers_days`, and all but its newest `answers_rows` (the writer
        does so now and then)."""
        old = datetime.now(timezone.utc) - timedelta(days=self.answers_days)
        with self.engine.begin() as db:
            db.execute(answers.delete().where(answers.c.created < old))
            newest = db.execute(sa.select(sa.func.max(answers.c.id))).scalar() or 0
            db.execute(answers.delete().where(answers.c.id <= newest - self.answers_rows))

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

    def answer_counts(self) -> dict[tuple[str, str], int]:
        """(model version, answer) → how many answers the log holds."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(answers.c.model_version, answers.c.predicted, sa.func.count())
                              .group_by(answers.c.model_version, answers.c.predicted))
            return {(version, label): n for version, label, n in rows}

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
