"""The feedback store's tables: the flags visitors make and the answers log; created once, whoever comes first, and
given the columns added since a store was made."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import sqlalchemy as sa

log = logging.getLogger(__name__)
CONNECT_TIMEOUT = 5  # seconds: a database that doesn't answer costs the page its button, not its start
STATEMENT_TIMEOUT = 10_000  # ms: a PostgreSQL server that hangs mid-statement can't hold a writer for ever

metadata = sa.MetaData()
flags = sa.Table(
    "flags", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False),
    # Always empty: the page promises only the photo and the answer. Kept so that stores made before
    # (NOT NULL, no default) still take new rows.
    sa.Column("name", sa.String(255), nullable=False),
    sa.Column("predicted", sa.String(16), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.String(16), nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    sa.Column("photo", sa.LargeBinary, nullable=False),
    # Added later: stores made before get them from migrate() (empty for their old rows).
    sa.Column("model_version", sa.String(64), nullable=False, server_default=""),
    sa.Column("review", sa.String(16), nullable=False, server_default=""),  # "", "accepted" or "rejected"
)
# The answers log: what each answer was, never what it was about (no photo, no name, no address), kept
# BEAR_ANSWERS_DAYS days: enough to count answers by class and version and to see the stated probabilities drift.
# Its ids are 64-bit where the database has them: the API can answer a hundred photos a second, for years.
answers = sa.Table(
    "answers", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True),
    sa.Column("created", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("model_version", sa.String(64), nullable=False),
    sa.Column("predicted", sa.String(16), nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    # Added later (migrate()): who asked, "page" or "api" (MCP's answers are the API's); each keeps its own newest rows.
    sa.Column("source", sa.String(8), nullable=False, server_default="page"),
)
# Each source's newest rows found without a scan of the table (answers.AnswersLog.prune).
SOURCE_ID = sa.Index("answers_source_id", answers.c.source, answers.c.id)
ADDED_COLUMNS = {flags: ("model_version", "review"), answers: ("source",)}


def default_db() -> Path:
    """The store where none is named (BEAR_FEEDBACK_DB): feedback.db in the folder the server runs from, which is the
    notebook's. Not beside the package: the server process may import an installed copy (site-packages) where the
    kernels import the checkout's, and the page's answers and the API's must meet in one file."""
    return Path.cwd() / "feedback.db"


def open_store(url: str) -> sa.Engine:
    """An engine for the store at database URL `url`, its tables made where they are not yet."""
    engine = sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args(url))
    if engine.dialect.name == "sqlite":
        sa.event.listen(engine, "connect", sqlite_pragmas)
    if engine.dialect.name == "postgresql":
        sa.event.listen(engine, "connect", postgresql_timeout)
    create_table(engine)
    return engine


def create_table(engine: sa.Engine, tries: int = 5) -> None:
    """Create the tables once, whoever comes first: kernels of several replicas start at once on a fresh database,
    and all but one lose the race to CREATE TABLE ("already exists", or a duplicate type on PostgreSQL). A loser
    tries again (create_all skips the tables that exist), as the winner may have made one table and not yet the
    other."""
    for attempt in range(tries):
        try:
            metadata.create_all(engine)
            break
        except sa.exc.DBAPIError:
            if all(sa.inspect(engine).has_table(t) for t in metadata.tables):
                break  # another process made them all
            if attempt == tries - 1:
                raise
            log.debug("another process was creating the feedback tables")
            time.sleep(0.05 * (attempt + 1))
    migrate(engine)


def migrate(engine: sa.Engine) -> None:
    """Give a store made before the columns of ADDED_COLUMNS those columns (their default for the rows it holds)."""
    for table, added in ADDED_COLUMNS.items():
        have = {c["name"] for c in sa.inspect(engine).get_columns(table.name)}
        for name in added:
            if name in have:
                continue
            column = table.c[name]
            try:
                with engine.begin() as db:
                    db.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {name} "
                                       f"{column.type.compile(engine.dialect)} NOT NULL "
                                       f"DEFAULT '{column.server_default.arg}'"))
                log.info("the feedback store's %s got its %s column", table.name, name)
            except sa.exc.DBAPIError:  # another process added it first
                if name not in {c["name"] for c in sa.inspect(engine).get_columns(table.name)}:
                    raise
    try:
        SOURCE_ID.create(engine, checkfirst=True)  # a store from before the source column has no such index
    except sa.exc.DBAPIError:  # another process made it first
        if SOURCE_ID.name not in {i["name"] for i in sa.inspect(engine).get_indexes(answers.name)}:
            raise
    widen_ids(engine)


def widen_ids(engine: sa.Engine) -> None:
    """64-bit answer ids on a PostgreSQL store made with 32-bit ones: at a hundred answers a second, 2**31 ids last
    eight months. A store holds at most a few million rows, so the rewrite is short; SQLite's ids are 64-bit."""
    if engine.dialect.name != "postgresql":
        return
    [id_column] = [c for c in sa.inspect(engine).get_columns(answers.name) if c["name"] == "id"]
    if isinstance(id_column["type"], sa.BigInteger):
        return
    with engine.begin() as db:
        db.execute(sa.text("SET LOCAL statement_timeout = 0"))
        db.execute(sa.text(f"ALTER TABLE {answers.name} ALTER COLUMN id TYPE bigint"))
        db.execute(sa.text(f"ALTER SEQUENCE IF EXISTS {answers.name}_id_seq AS bigint"))
    log.info("the feedback store's answers got 64-bit ids")


def connect_args(url: str) -> dict:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"timeout": 10}  # waiting for another visitor's write, on top of busy_timeout below
    if backend == "postgresql":
        return {"connect_timeout": CONNECT_TIMEOUT}
    return {}


def postgresql_timeout(connection, _record) -> None:
    # Set per connection rather than as a startup option, which some connection poolers (PgBouncer) refuse.
    cursor = connection.cursor()
    cursor.execute(f"SET statement_timeout = {STATEMENT_TIMEOUT}")
    cursor.close()
    connection.commit()


def sqlite_pragmas(connection, _record) -> None:
    # WAL lets readers and one writer work at once; busy_timeout makes a writer wait for another
    # visitor's write instead of failing with "database is locked".
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()
