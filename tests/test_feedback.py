"""The "That's wrong" store: one row per flag, no metadata kept, a size cap, and many writers at once."""
import multiprocessing
import os
import sqlite3
from io import BytesIO

import pytest
from PIL import Image

from bear_classifier.page.feedback import FeedbackError, FeedbackStore
from conftest import ROOT
from corpus import photo


def flag_many(url: str, visitor: int, n: int) -> None:
    store = FeedbackStore(url, per_minute=None)  # a kernel of its own, as each visitor has; it creates the table
    for i in range(n):
        store.add(photo((300, 200), seed=i), "grizzly", 0.9, "black", f"v{visitor}-{i}")


def flag_at_once(url: str, writers: int, each: int = 10) -> None:
    """`writers` processes start on the same fresh store at `url` (each creates the table, as each kernel does)
    and flag `each` photos at the same time; then every row is there."""
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=flag_many, args=(url, v, each)) for v in range(writers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    rows = FeedbackStore(url).all()
    assert sorted(r.model_sha256 for r in rows) == sorted(f"v{v}-{i}" for v in range(writers) for i in range(each))
    assert all(Image.open(BytesIO(r.photo)).size == (300, 200) for r in rows)


def test_five_visitors_starting_on_a_fresh_store_and_flagging_at_once_lose_nothing(tmp_path):
    flag_at_once(f"sqlite:///{tmp_path / 'feedback.db'}", writers=5)


def test_a_kernel_that_loses_the_race_to_create_the_table_still_stores(tmp_path, monkeypatch):
    """create_all checks, then creates: a kernel whose check ran just before another kernel's CREATE TABLE gets
    "already exists". Replayed here for certain (the check skipped), where the processes above hit it by chance."""
    from bear_classifier.page import tables

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    FeedbackStore(url).add(photo(), "grizzly", 0.9, "black", "first")
    create_all = tables.metadata.create_all
    monkeypatch.setattr(tables.metadata, "create_all", lambda engine: create_all(engine, checkfirst=False))
    late = FeedbackStore(url)
    late.add(photo(seed=1), "grizzly", 0.9, "teddy", "late")
    assert [r.model_sha256 for r in late.all()] == ["first", "late"]


def test_a_kernel_that_finds_one_table_made_and_not_the_other_makes_the_other(tmp_path, monkeypatch):
    """The race of a fresh server's kernels, halfway: the winner has made `flags` and not yet `answers` when a
    loser's CREATE TABLE flags fails. The loser tries again, and its answers log works."""
    import sqlalchemy as sa

    from bear_classifier.page import tables

    url = f"sqlite:///{tmp_path / 'feedback.db'}"
    tables.flags.create(sa.create_engine(url))  # the winner, halfway
    create_all, calls = tables.metadata.create_all, []

    def racing(engine, **_):
        calls.append(engine)
        return create_all(engine, checkfirst=len(calls) > 1)  # the first as if its check ran before the winner's

    monkeypatch.setattr(tables.metadata, "create_all", racing)
    store = FeedbackStore(url)
    store.answers_log.answered("grizzly", 0.97, "v1")
    store.answers_log.flush()
    assert len(calls) == 2 and store.answers_log.counts() == {("v1", "grizzly"): 1}


def test_a_full_store_refuses_with_a_sentence_and_keeps_what_it_has(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}", max_mb=0.3, visitor_share=1, per_minute=None)
    with pytest.raises(FeedbackError, match="the feedback store is full"):
        for i in range(100):
            store.add(photo((448, 448), seed=i), "teddy", 0.8, "grizzly", "abc")
    assert 0 < len(store.all()) < 100


def test_big_photos_are_kept_small(tmp_path):
    store = FeedbackStore(f"sqlite:///{tmp_path / 'feedback.db'}")
    store.add(photo((4000, 3000)), "teddy", 0.8, "grizzly", "abc")
    assert Image.open(BytesIO(store.all()[0].photo)).size == (448, 336)


def test_three_replicas_share_one_postgresql_store_without_losing_a_row():
    from postgres import postgres_server

    with postgres_server() as url:
        flag_at_once(url, writers=3)


def test_the_store_is_chosen_by_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("BEAR_FEEDBACK_DB", str(tmp_path / "here.db"))
    assert FeedbackStore.from_env().url == f"sqlite:///{tmp_path / 'here.db'}"
    monkeypatch.setenv("BEAR_FEEDBACK_URL", f"sqlite:///{tmp_path / 'other.db'}")
    assert FeedbackStore.from_env().url.endswith("other.db")
    monkeypatch.setenv("BEAR_FEEDBACK", "off")
    assert FeedbackStore.from_env() is None


def test_review_feedback_puts_flagged_photos_in_the_review_sheet(tmp_path):
    import csv
    import subprocess
    import sys

    from conftest import ROOT

    db = tmp_path / "feedback.db"
    store = FeedbackStore(f"sqlite:///{db}")
    store.add(photo(seed=1), "grizzly", 0.61, "black", "abc")
    store.add(photo(seed=2), "not_bear", 0.9, "teddy", "abc")
    r = subprocess.run([sys.executable, "-m", "bear_classifier", "review", "--feedback", "--out", str(tmp_path / "review")],
                       cwd=ROOT, capture_output=True, text=True, env={**__import__("os").environ, "BEAR_FEEDBACK_DB": str(db)})
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "review" / "feedback.csv")))  # beside a data review, not over it
    assert [(r["file"], r["label"], r["predicted"]) for r in rows] == [
        ("feedback/black/flag-1.jpg", "black", "grizzly"), ("feedback/teddy/flag-2.jpg", "teddy", "not_bear")]
    assert Image.open(tmp_path / "review" / "feedback" / "teddy" / "flag-2.jpg").size == (320, 240)
    assert (tmp_path / "review" / "feedback.html").read_text().count("<figure>") == 2


def test_a_database_that_never_answers_fails_within_the_connect_timeout():
    """A PostgreSQL address where something accepts connections and never speaks: without a connect timeout the
    kernel's store thread waits for ever (the TCP handshake succeeds); with one it gives up, and the page goes on."""
    import socket
    import threading

    import sqlalchemy as sa

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # the kernel completes the handshake for us; nobody ever reads or writes
        url = f"postgresql+psycopg://bear@127.0.0.1:{silent.getsockname()[1]}/bear"
        outcome = []

        def open_store():
            try:
                FeedbackStore(url)
            except sa.exc.OperationalError as e:
                outcome.append(e)

        opener = threading.Thread(target=open_store, daemon=True)
        opener.start()
        opener.join(60)  # a hang detector, not a timing: the timeout is a few seconds
        assert not opener.is_alive(), "opening the store hung on a database that never answers"
        assert outcome and "timeout" in str(outcome[0]).lower()


def test_a_store_size_that_is_not_a_number_says_what_to_set(monkeypatch):
    from bear_classifier.page.feedback import FeedbackStore

    monkeypatch.setenv("BEAR_FEEDBACK_MAX_MB", "lots")
    with pytest.raises(ValueError, match=r"BEAR_FEEDBACK_MAX_MB='lots' is not a number: give a number of megabytes"):
        FeedbackStore.from_env()


def test_the_page_and_the_api_meet_in_the_working_folders_store_wherever_the_package_is(tmp_path):
    """With no store named, the server process (which may import an installed copy of the package) and the kernels
    (which import the checkout's) must write one file: feedback.db in the folder they run from, not beside the
    package. Run from an empty folder, the answers log and the flags both land there."""
    import subprocess
    import sys

    code = ("from bear_classifier.page.answers import AnswersLog\n"
            "from bear_classifier.page.feedback import FeedbackStore\n"
            "log = AnswersLog.from_env(); log.answered('grizzly', 0.97, 'v1'); log.flush()\n"
            "print(log.engine.url.database, FeedbackStore.from_env().engine.url.database)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("BEAR_FEEDBACK")} | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == [str(tmp_path / "feedback.db")] * 2
    rows = sqlite3.connect(tmp_path / "feedback.db").execute("SELECT predicted, model_version FROM answers").fetchall()
    assert rows == [("grizzly", "v1")]


def test_answers_still_waiting_when_a_process_ends_are_written(tmp_path):
    """The log's writer is a daemon thread: a process that answers and exits (a kernel culled, the MCP server's client
    gone) must not take its last answers with it."""
    import subprocess
    import sys

    code = ("from bear_classifier.page.answers import AnswersLog\n"
            "log = AnswersLog.from_env()\n"
            "for i in range(200): log.answered('grizzly', 0.9, 'v1', source='api')\n")  # and exit at once
    env = {**os.environ, "BEAR_FEEDBACK_DB": str(tmp_path / "f.db"), "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert sqlite3.connect(tmp_path / "f.db").execute("SELECT count(*) FROM answers").fetchone() == (200,)
