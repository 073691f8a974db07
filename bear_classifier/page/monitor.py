"""The monitor page's tables (monitor.ipynb): how the served model does on what visitors send, read from the answers log
and the "That's wrong" store (feedback.py), each a pandas DataFrame the notebook plots in one line.

It reads counts and probabilities; the only photos it reads are the flagged ones, for the deployer to review.
Needs pandas and matplotlib (pip install .[monitor]); the page itself does not.
"""
from __future__ import annotations

import html
import logging
from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa

from .. import environment
from ..inference.predict import card_classes, read_card, served_classes, served_model_path
from .tables import answers, default_db, flags

log = logging.getLogger(__name__)
DAYS = 30  # the answers shown, unless BEAR_MONITOR_DAYS says otherwise


class Monitor:
    """The answers log and the flags of one store (a database URL), and the served model's card."""

    def __init__(self, url: str, days: int = DAYS):
        self.engine = sa.create_engine(url)
        path = served_model_path()
        self.card = read_card(path)
        self.classes = card_classes(self.card, path)  # from the card just read, not read again
        self.since = datetime.now(timezone.utc) - timedelta(days=days)

    @classmethod
    def from_env(cls) -> "Monitor":
        """The store the page writes to (BEAR_FEEDBACK_URL, or the SQLite file BEAR_FEEDBACK_DB), BEAR_MONITOR_DAYS."""
        return cls(environment.feedback_url(default_db()), days=environment.monitor_days(DAYS))

    def _read(self, query) -> pd.DataFrame:
        try:
            return pd.read_sql(query, self.engine)
        except sa.exc.SQLAlchemyError:  # no store yet: the page has answered nobody
            log.warning("the store could not be read", exc_info=True)
            return pd.DataFrame(columns=[c.name for c in query.selected_columns])

    def answers(self) -> pd.DataFrame:
        """Every answer since `since`: created (UTC), predicted, probability, model_version."""
        columns = [answers.c.created, answers.c.predicted, answers.c.probability, answers.c.model_version]
        frame = self._read(sa.select(*columns).where(answers.c.created >= self.since).order_by(answers.c.created))
        frame["created"] = pd.to_datetime(frame["created"], utc=True)
        return frame

    def answers_per_day(self) -> pd.DataFrame:
        """Answers per day (UTC) by class, in the page's words: one row a day, one column a class."""
        frame = self.answers()
        table = pd.crosstab(frame["created"].dt.date.rename("day"), frame["predicted"].map(self.classes.name))
        return table.reindex(columns=[self.classes.name(label) for label in self.classes.vocab], fill_value=0)

    def sureness(self, days: int = 7) -> pd.DataFrame:
        """For each class: the mean probability stated with its answers in the last `days` days, beside the model's
        accuracy on its validation photos (its card). A well-calibrated model states what it achieves: the gap
        says the photos visitors send are not like the ones it was measured on."""
        frame = self.answers()
        week = frame[frame["created"] >= datetime.now(timezone.utc) - timedelta(days=days)]
        stated = week.groupby("predicted")["probability"].mean()
        validation = self.card.get("valid_metrics", {}).get("per_class", {})
        return pd.DataFrame({"stated this week": stated.reindex(self.classes.vocab),
                             "validation accuracy": pd.Series(validation).reindex(self.classes.vocab)},
                            index=self.classes.vocab).rename(index=self.classes.name)

    def corrections(self) -> pd.DataFrame:
        """The flags as a matrix: what the model said (rows) against what visitors said it is (columns)."""
        frame = self._read(sa.select(flags.c.predicted, flags.c.label))
        names = [self.classes.name(label) for label in self.classes.vocab]
        table = pd.crosstab(frame["predicted"].map(self.classes.name).rename("the model said"),
                            frame["label"].map(self.classes.name).rename("visitors said"))
        return table.reindex(index=names, columns=names, fill_value=0)

    def flagged(self, limit: int = 24) -> pd.DataFrame:
        """The newest `limit` flagged photos to review: id, when, what the model said and how sure, what the visitor
        said, the model that answered, and the photo (JPEG bytes, at most 448 px)."""
        columns = [flags.c.id, flags.c.created, flags.c.predicted, flags.c.probability, flags.c.label,
                   flags.c.model_sha256, flags.c.photo]
        return self._read(sa.select(*columns).order_by(flags.c.id.desc()).limit(limit))

    def versions(self) -> pd.DataFrame:
        """Which model version served when: its first and last answer in the log, and how many it gave."""
        frame = self.answers()
        table = frame.groupby("model_version")["created"].agg(first="min", last="max", answers="count")
        return table.sort_values("first")


def gallery(flagged: pd.DataFrame, classes=None):
    """The flagged photos as a grid of cards (ipywidgets): the photo, what the model said, what the visitor said."""
    import ipywidgets as widgets

    classes = classes or served_classes()
    cards = []
    for row in flagged.itertuples():
        caption = (f"#{row.id}: the model said {classes.name(row.predicted)} ({row.probability:.0%}); "
                   f"the visitor says {classes.name(row.label)}")
        cards.append(widgets.VBox([widgets.Image(value=bytes(row.photo), format="jpeg", width=160),
                                   widgets.HTML(f"<small>{html.escape(caption)}</small>")], layout={"width": "180px"}))
    if not cards:
        return widgets.HTML("<p>No flagged photos to review.</p>")
    return widgets.GridBox(cards, layout={"grid_template_columns": "repeat(auto-fill, 180px)", "grid_gap": "8px"})
