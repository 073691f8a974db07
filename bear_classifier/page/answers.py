"""The answers log: what each answer said (class, probability, model version, time), never what it was about (no
photo, no name, no address). The page and the API write it, each row on a thread of the log's own; the monitor reads
it (monitor.py). Rows go by age (BEAR_ANSWERS_DAYS) and by count (BEAR_ANSWERS_ROWS)."""
from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .. import environment
from .tables import answers, default_db, open_store

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
# The newest rows kept: the API answers as fast as programs ask, up to ~100 answers a second on two cores, so days
# alone don't bound the log. A million rows is about 60 MB of SQLite, and weeks of a busy page's answers.
DEFAULT_ROWS = 1_000_000
PRUNE_EVERY = 3600.0  # seconds between two prunings by one writer


class AnswersLog:
    """The answers log of the store behind `engine`, keeping rows `days` days and at most its newest `rows`."""

    def __init__(self, engine: sa.Engine, days: float = DEFAULT_DAYS, rows: int = DEFAULT_ROWS):
        self.engine, self.days, self.rows = engine, days, rows
        self._queue: queue.Queue = queue.Queue()  # rows waiting for the writer
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._pruned = -PRUNE_EVERY

    @classmethod
    def from_env(cls, engine: sa.Engine | None = None) -> "AnswersLog | None":
        """The log of the store the environment names (BEAR_FEEDBACK_URL, else BEAR_FEEDBACK_DB, else feedback.db in
        the working folder), or of `engine`'s; None where storing is off (BEAR_FEEDBACK=off)."""
        if not environment.feedback_on():
            return None
        return cls(engine or open_store(environment.feedback_url(default_db())),
                   environment.answers_days(DEFAULT_DAYS), environment.answers_rows(DEFAULT_ROWS))

    def answered(self, predicted: str, probability: float, model_version: str) -> None:
        """One row, written on the log's own thread: a commit takes milliseconds (11.6 ms on SQLite, with its sync to
        disk: docs/production.md), which the next photo of a batch must not wait for."""
        row = dict(created=datetime.now(timezone.utc), model_version=model_version, predicted=predicted,
                   probability=probability)
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, daemon=True, name="the answers log")
                self._writer.start()
        self._queue.put(row)

    def flush(self) -> None:
        """Wait until every answer logged so far is written (tests, benchmarks)."""
        self._queue.join()

    def prune(self) -> None:
        """Delete the rows older than `days`, and all but the newest `rows` (the writer does so now and then)."""
        old = datetime.now(timezone.utc) - timedelta(days=self.days)
        with self.engine.begin() as db:
            db.execute(answers.delete().where(answers.c.created < old))
            newest = db.execute(sa.select(sa.func.max(answers.c.id))).scalar() or 0
            db.execute(answers.delete().where(answers.c.id <= newest - self.rows))

    def counts(self) -> dict[tuple[str, str], int]:
        """(model version, answer) → how many answers the log holds."""
        with self.engine.connect() as db:
            rows = db.execute(sa.select(answers.c.model_version, answers.c.predicted, sa.func.count())
                              .group_by(answers.c.model_version, answers.c.predicted))
            return {(version, label): n for version, label, n in rows}

    def _write(self) -> None:
        while True:
            rows = [self._queue.get()]
            while not self._queue.empty():  # those that came meanwhile: one commit
                rows.append(self._queue.get_nowait())
            try:
                with self.engine.begin() as db:
                    db.execute(answers.insert(), rows)
                if time.monotonic() - self._pruned > PRUNE_EVERY:
                    self._pruned = time.monotonic()
                    self.prune()
            except Exception:  # the answers are given; the log misses them, says so, and the writer goes on
                log.warning("%d answers could not be written to the answers log", len(rows), exc_info=True)
            for _ in rows:
                self._queue.task_done()
