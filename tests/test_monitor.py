"""The monitor page (monitor.ipynb, `make monitor`): the answers log and the flags as tables and plots, served to the
deployer alone: from this machine, or with the token; anyone else gets 403 before any kernel starts."""
import re
import urllib.request
from datetime import datetime, timedelta, timezone
from io import BytesIO

import pytest
from PIL import Image

from browser import ROOT, chromium, kernels, open_app, require_browser, voila

MONITOR = 18420  # this file's loopback port
TOKEN = "a-token-for-the-test"
EXAMPLES = ["black-bear.jpg", "chelsea.jpg", "coffee.jpg", "grizzly.jpg", "rocket.jpg", "teddy-bear.jpg"]
OLD = "0123456789ab"  # a version served before the current one


def flags_of_make_monitor() -> list[str]:
    """The monitor's command line flags in the Makefile (its template, no preheated kernels, the deployer check)."""
    recipe = (ROOT / "Makefile").read_text().split("\nmonitor:", 1)[1].split("\n\n", 1)[0]
    flags = re.findall(r"--(?:template|VoilaConfiguration\.preheat_kernel|Voila\.identity_provider_class)=\S+", recipe)
    assert len(flags) == 3, recipe
    return flags


@pytest.fixture(scope="module")
def log(tmp_path_factory):
    """A store as the page leaves it: the examples answered by the served model on three days (nine days ago by an
    older version), and two flags. Yields (database URL, {day offset: [Prediction]}, the current version)."""
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier
    from bear_classifier.page.feedback import FeedbackStore
    from bear_classifier.page.tables import answers

    url = f"sqlite:///{tmp_path_factory.mktemp('monitor') / 'feedback.db'}"
    store, model = FeedbackStore(url, per_minute=None), Classifier.load()
    photos = {name: open_image((ROOT / "examples" / name).read_bytes()) for name in EXAMPLES}
    preds = {name: model.predict(img) for name, img in photos.items()}
    current, now = getattr(model, "version", "") or model.sha256[:8], datetime.now(timezone.utc)
    days = {9: OLD, 2: current, 0: current}
    rows = [dict(created=now - timedelta(days=ago, minutes=i), predicted=p.label, probability=p.probability,
                 model_version=v)
            for ago, v in days.items() if ago for i, p in enumerate(preds.values())]
    with store.engine.begin() as db:
        db.execute(answers.insert(), rows)
    for p in preds.values():  # today's, as the page writes them
        store.answers_log.answered(p.label, p.probability, current)
    store.answers_log.flush()
    assert preds["grizzly.jpg"].label == "grizzly" and not preds["rocket.jpg"].in_set
    store.add(photos["grizzly.jpg"], "grizzly", preds["grizzly.jpg"].probability, "teddy", model.sha256)
    store.add(photos["rocket.jpg"], preds["rocket.jpg"].label, preds["rocket.jpg"].probability, "grizzly", model.sha256)
    return url, preds, current


def test_the_tables_count_what_the_log_holds(log):
    from bear_classifier.inference.predict import served_classes
    from bear_classifier.page.monitor import Monitor

    url, preds, current = log
    monitor, classes = Monitor(url), served_classes()
    per_day = monitor.answers_per_day()
    assert len(per_day) == 3 and (per_day.sum(axis=1) == len(EXAMPLES)).all()
    for label in classes.vocab:
        assert per_day[classes.name(label)].sum() == 3 * sum(p.label == label for p in preds.values()), label

    sure = monitor.sureness()  # this week: the two latest days, the same photos
    grizzly = classes.name("grizzly")
    assert sure.loc[grizzly, "stated this week"] == pytest.approx(preds["grizzly.jpg"].probability)
    assert sure.loc[grizzly, "validation accuracy"] == monitor.card["valid_metrics"]["per_class"]["grizzly"]

    matrix = monitor.corrections()
    assert matrix.values.sum() == 2
    assert matrix.loc[grizzly, classes.name("teddy")] == 1
    assert matrix.loc[classes.name(classes.none_label), grizzly] == 1

    versions = monitor.versions()
    assert list(versions.index) == [OLD, current]  # the order they served in
    assert list(versions["answers"]) == [len(EXAMPLES), 2 * len(EXAMPLES)]
    assert versions.loc[OLD, "last"] < versions.loc[current, "first"]

    flagged = monitor.flagged()
    assert list(flagged["label"]) == ["grizzly", "teddy"]  # newest first: the rocket, then the grizzly
    assert all(max(Image.open(BytesIO(photo)).size) <= 448 for photo in flagged["photo"])


def test_a_days_window_leaves_older_answers_out(log):
    from bear_classifier.page.monitor import Monitor

    url, _, current = log
    assert list(Monitor(url, days=5).versions().index) == [current]


def get(url: str, **headers) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=120) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_deployer_sees_the_monitor_and_a_visitor_gets_403(log, tmp_path):
    from bear_classifier.inference.predict import served_classes

    require_browser()
    url, _, _ = log
    env = {"BEAR_FEEDBACK_URL": url, "PYTHONPATH": str(ROOT)}
    with voila(*flags_of_make_monitor(), f"--token={TOKEN}", notebook="monitor.ipynb", port=MONITOR, env=env,
               log=tmp_path / "monitor.log") as (base, server_log, proc):
        # From this machine: the page, with its two plots and the corrections table, without the token.
        status, page = get(base + "/")
        assert status == 200 and page.count('"image/png"') == 2 and "the model said" in page and "Traceback" not in page
        started = len(kernels(proc))
        # A visitor: from elsewhere (the address a proxy on this machine forwards for), without the token.
        status, page = get(base + "/", **{"X-Forwarded-For": "203.0.113.7"})
        assert status == 403 and "Only the site&#39;s deployer may open this monitor" in page
        assert len(kernels(proc)) == started  # refused before any kernel started
        for path in ["/api/kernels", "/voila/api/shutdown/x"]:
            assert get(base + path, **{"X-Forwarded-For": "203.0.113.7"})[0] in (403, 404, 405)
        # The deployer from elsewhere, with the token.
        status, page = get(f"{base}/?token={TOKEN}", **{"X-Forwarded-For": "203.0.113.7"})
        assert status == 200 and "the model said" in page

        # In a browser on this machine, the flagged photos show, with what each side said.
        classes = served_classes()
        with chromium() as browser:
            tab = open_app(browser, base, ready="text=the visitor says " + classes.name("teddy"))
            assert tab.locator("img.widget-image").count() == 2
        assert "Traceback" not in server_log.read_text()
