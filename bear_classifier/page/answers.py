"""The answers log: what each answer said (class, probability, model version, time, and whether the page or the API
gave it), never what it was about (no photo, no name, no address). The page and the API write it, each row on a
thread of the log's own; the monitor reads it (monitor.py). Rows go by age (BEAR_ANSWERS_DAYS) and by count
(BEAR_ANSWERS_ROWS, for the page and for the API each)."""
from __future__ import annotations

import atexit
import logging
import queue
import random
import threading
import time
from datetime import datetime, timedelta, timezone

import sqlalchemy as sa

from .. import environment
from .tables import answers, default_db, open_store

log = logging.getLogger(__name__)

DEFAULT_DAYS = 30
# The newest rows kept of each source: the API answers as fast as programs ask, up to ~100 answers a second on two
# cores, so days alone don't bound the log; and a flood of API answers must not push the page's out. A million rows
# is about 120 MB of SQLite (with its indexes), and weeks of a busy page's answers.
DEFAULT_ROWS = 1_000_000
SOURCES = ("page", "api")
PRUNE_EVERY = 3600.0  # seconds between two prunings by one writer; its first within an hour, at random
WAITING = 10_000  # rows waiting for a slow database at most; beyond, answers go unlogged (and the log says so)
DRAIN_SECONDS = 2.0  # at exit, how long the rows still waiting may take to be written


class AnswersLog:
    """The answers log of the store behind `engine`, keeping rows `days` days and at most the newest `rows` of each
    source."""

    def __init__(self, engine: sa.Engine, days: float = DEFAULT_DAYS, rows: int = DEFAULT_ROWS):
        self.engine, self.days, self.rows = engine, days, rows
        self._queue: queue.Queue = queue.Queue(maxsize=WAITING)
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        # Not at once: every visitor's kernel is a writer, and a store pruned by each new one would be pruned always.
        self._pruned = time.monotonic() - random.uniform(0, PRUNE_EVERY)
        self._dropped = self._failed = 0

    @classmethod
    def from_env(cls, engine: sa.Engine | None = None) -> AnswersLog | None:
        """The log of the store the environment names (BEAR_FEEDBACK_URL, else BEAR_FEEDBACK_DB, else feedback.db in
        the working folder), or of `engine`'s; None where storing is off (BEAR_FEEDBACK=off). Its settings are read
        first, so a wrong one is a sentence before any file is made."""
        if not environment.feedback_on():
            return None
        days, rows = environment.answers_days(DEFAULT_DAYS), environment.answers_rows(DEFAULT_ROWS)
        return cls(engine or open_store(environment.feedback_url(default_db())), days, rows)

    def answered(self, predicted: str, probability: float, model_version: str, source: str = "page") -> None:
        """One row, written on the log's own thread: a commit takes milliseconds (11.6 ms on SQLite, with its sync to
        disk: docs/production.md), which the next photo of a batch must not wait for."""
        row = dict(created=datetime.now(timezone.utc), model_version=model_version, predicted=predicted,
                   probability=probability, source=source)
        with self._lock:
            if self._writer is None:
                self._writer = threading.Thread(target=self._write, daemon=True, name="the answers log")
                self._writer.start()
                atexit.register(self.drain, DRAIN_SECONDS)  # a daemon thread dies at exit: its rows would be lost
        try:
            self._queue.put_nowait(row)
        except queue.Full:  # the database is too slow or down: the answer stands, the log misses it
            with self._lock:
                self._dropped += 1
                dropped = self._dropped
            if dropped == 1 or dropped % 1000 == 0:
                log.warning("the answers log's database is not keeping up: %d answers left unlogged", dropped)

    def flush(self) -> None:
        """Wait until every answer logged so far is written (tests, benchmarks)."""
        self._queue.join()

    def drain(self, seconds: float) -> None:
        """Wait at most `seconds` for the rows still waiting to be written (at exit)."""
        deadline = time.monotonic() + seconds
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def prune(self) -> None:
        """Delete the rows older than `days`, and of each source all but its newest `rows` (the writer does so now and
        then)."""
        old = datetime.now(timezone.utc) - timedelta(days=self.days)
        with self.engine.connect() as db:  # read first, outside the write lock (SQLite has one for the whole file)
            # The id below which each source's rows go: its `rows`-th newest, by the (source, id) index.
            cuts = {source: db.execute(sa.select(answers.c.id).where(answers.c.source == source)
                                       .order_by(answers.c.id.desc()).offset(self.rows).limit(1)).scalar()
                    for source in SOURCES}
        with self.engine.begin() as db:
            db.execute(answers.delete().where(answers.c.created < old))
            for source, cut in cuts.items():
                if cut is not None:
                    db.execute(answers.delete().where(answers.c.source == source, answers.c.id <= cut))

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
            except Exception:  # the answers are given; the log misses them, says so, and the writer goes on
                self._failed += 1
                log.warning("%d answers could not be written to the answers log", len(rows),
                            exc_info=self._failed == 1)  # the reason once; then a line each time
            if time.monotonic() - self._pruned > PRUNE_EVERY:
                self._pruned = time.monotonic()
                try:
                    self.prune()
                except Exception:
                    log.warning("the answers log's old rows could not be deleted; trying again in an hour",
                                exc_info=True)
            for _ in rows:  # after the pruning: flush() waits for both
                self._queue.task_done()
