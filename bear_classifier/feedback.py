""""That's wrong": the photos visitors flag, with what the model said and what they say it is.

Nothing is stored unless a visitor presses the button. The store is a database URL (SQLAlchemy):
an SQLite file by default (WAL mode: every visitor's kernel writes to it at once), PostgreSQL where
several servers share it. The photo is re-encoded from its pixels, so no EXIF metadata (a phone
photo's GPS position) is ever stored.
"""
from __future__ import annotations

import io
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa
from PIL import Image

log = logging.getLogger(__name__)
DEFAULT_DB = Path(__file__).resolve().parent.parent / "feedback.db"
DEFAULT_MAX_MB = 500
STORED_SIDE = 448  # photos are kept at this size: enough to relabel and retrain at 224 px

metadata = sa.MetaData()
flags = sa.Table(
    "flags", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("predicted", sa.String(16), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("photo", sa.LargeBinary, nullable=False),
)


class FeedbackError(RuntimeError):
    """The flag could not be stored; str(error) is a sentence for the visitor."""


@dataclass
class Flag:
    id: int
    created: datetime
    name: str
    predicted: str
    probability: float
    label: str
    model_sha256: str
    photo: bytes


def clean_jpeg(img: Image.Image, side: int = STORED_SIDE) -> bytes:
    """The photo re-encoded from its pixels alone: no EXIF, no GPS, no comments, at most `side` pixels."""
    small = Image.frombytes("RGB", img.size, img.convert("RGB").tobytes())  # pixels only, no info dict
    small.thumbnail((side, side))
    buf = io.BytesIO()
    small.save(buf, format="JPEG", quality=90)
    return buf.getvalue()


class FeedbackStore:
    """Flags in a database at `url`, refused with a sentence once the photos take `max_mb`."""

    def __init__(self, url: str, max_mb: float = DEFAULT_MAX_MB):
        self.url, self.max_bytes = url, int(max_mb * 2**20)
        self.engine = sa.create_engine(url, pool_pre_ping=True)
        if self.engine.dialect.name == "sqlite":
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)

    @classmethod
    def from_env(cls) -> "FeedbackStore | None":
        """The store the environment asks for, or None where storing is turned off (BEAR_FEEDBACK=off).

        BEAR_FEEDBACK_URL: a database URL (postgresql+psycopg://...); else BEAR_FEEDBACK_DB: an
        SQLite file (default feedback.db next to the package); BEAR_FEEDBACK_MAX_MB caps its photos.
        """
        if os.environ.get("BEAR_FEEDBACK", "on").lower() in ("off", "0", "false", "no"):
            return None
        url = os.environ.get("BEAR_FEEDBACK_URL") or f"sqlite:///{os.environ.get('BEAR_FEEDBACK_DB', DEFAULT_DB)}"
        return cls(url, float(os.environ.get("BEAR_FEEDBACK_MAX_MB", DEFAULT_MAX_MB)))

    def add(self, img: Image.Image, name: str, predicted: str, probability: float, label: str,
            model_sha256: str) -> int:
        """Store one flag; its id. Raises FeedbackError when the store is full or unreachable."""
        photo = clean_jpeg(img)
        try:
            with self.engine.begin() as db:
                used = db.execute(sa.select(sa.func.coalesce(sa.func.sum(sa.func.length(flags.c.photo)), 0))).scalar()
                if used + len(photo) > self.max_bytes:
                    raise FeedbackError("Thanks, but the feedback store is full, so this photo was not kept.")
                return db.execute(flags.insert().values(
                    created=datetime.now(timezone.utc), name=name[:255], predicted=predicted, probability=probability,
                    label=label, model_sha256=model_sha256, photo=photo)).inserted_primary_key[0]
        except sa.exc.SQLAlchemyError:
            log.exception("storing feedback for %r failed", name)
            raise FeedbackError("Sorry, your answer could not be stored right now. Please try again later.") from None

    def all(self) -> list[Flag]:
        with self.engine.connect() as db:
            return [Flag(**row._mapping) for row in db.execute(sa.select(flags).order_by(flags.c.id))]


def _sqlite_pragmas(connection, _record) -> None:
    # WAL lets readers and one writer work at once; busy_timeout makes a writer wait for another
    # visitor's write instead of failing with "database is locked".
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
