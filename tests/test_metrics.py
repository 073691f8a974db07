"""/metrics for real: a real Prometheus (Debian's) scrapes one server, then three replicas behind HAProxy, and the
values it holds after real uploads through the page are the answers the page gave."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from browser import ROOT, card, chromium, kernels, open_app, serve, upload_file, voila, wait_card, wait_for
from conftest import missing
from test_replicas import replica_process

# This file's loopback ports: one server, its Prometheus; the balancer, three replicas, their Prometheus.
SERVER, PROMETHEUS, BALANCER, FIRST_REPLICA, REPLICAS_PROMETHEUS = 18400, 18401, 18410, 18411, 18402
CROWDED = 18403  # a server whose visitors may hold one kernel each
API = 18404  # a server answering its HTTP API
EXAMPLES = ROOT / "examples"


def prometheus_exe() -> str:
    path = shutil.which("prometheus")
    if not path:
        missing("prometheus", "Debian/Ubuntu: sudo apt-get install prometheus")
    return path


@contextmanager
def prometheus(tmp_path: Path, port: int, targets: list[str]):
    """deploy/prometheus/prometheus.yml with `targets`, scraping and evaluating every second; yields query(promql)."""
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(ROOT / "deploy" / "prometheus" / "alerts.yml")]
    config["scrape_configs"][0]["static_configs"] = [{"targets": targets}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    cmd = [prometheus_exe(), f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
           f"--web.listen-address=127.0.0.1:{port}"]
    with serve(cmd, port, "/-/ready", tmp_path, tmp_path / "prometheus.log", dict(os.environ)) as (url, log, _):
        assert wait_for(lambda: _up(url + "/-/ready"), 60), log.read_text()
        def query(promql: str) -> dict:
            """{labels other than job and instance, as a tuple of values: value}, or {instance: value} for `up`."""
            address = f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
            with urllib.request.urlopen(address, timeout=10) as r:
                result = json.load(r)["data"]["result"]
            return {tuple(v for k, v in sorted(s["metric"].items()) if k not in ("job", "__name__")):
                    float(s["value"][1]) for s in result}
        query.url = url
        yield query


def expected(files: list[tuple[str, bytes]]) -> dict[str, int]:
    """What the served model answers for each photo, in-process: the counts the page must have made."""
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier

    model, out = Classifier.load(), {}
    for _, data in files:
        label = model.predict(open_image(data)).label
        out[label] = out.get(label, 0) + 1
    return out


def version() -> str:
    """The served model's version, as the page names it (its sha256's first 8 where it names none)."""
    from bear_classifier.inference.predict import Classifier

    model = Classifier.load()
    return getattr(model, "version", "") or model.sha256[:8]


def settles(query, promql: str, want: dict, timeout: float = 60) -> dict:
    """Wait until Prometheus holds `want` for `promql` (it scrapes every second); its last answer."""
    seen = {}

    def holds() -> bool:
        seen.update(result=query(promql))
        return seen["result"] == want

    wait_for(holds, timeout)
    return seen["result"]


def test_every_sentence_for_a_bad_upload_has_a_reason_to_count_it_by():
    from bear_classifier import metrics
    from bear_classifier.inference.answer import read_photo
    from bear_classifier.inference.images import ImageError, check_size, open_image
    from bear_classifier.page.widget import TOO_MANY, Photo
    from corpus import encode, photo

    png = encode(photo(seed=1), "PNG")
    bad = {"empty": lambda: open_image(b""), "not_an_image": lambda: open_image(b"%PDF-1.4 a document"),
           "damaged": lambda: open_image(png[: len(png) // 2]), "too_large": lambda: check_size(30 * 2**20),
           "too_many_pixels": lambda: open_image(png, max_pixels=100),
           "too_small": lambda: read_photo(encode(photo((31, 400)), "PNG")),
           "too_many_at_once": lambda: Photo("x.jpg", b"", 0, refused=TOO_MANY).image}
    for reason, make in bad.items():
        with pytest.raises(ImageError) as error:
            make()
        assert error.value.reason == reason and reason in metrics.REASONS, (reason, str(error.value))


@pytest.fixture(scope="module")
def photos():
    files = [(f"visitor-{name}", (EXAMPLES / name).read_bytes())
             for name in ("grizzly.jpg", "teddy-bear.jpg", "rocket.jpg")]
    return files, expected(files)


def test_prometheus_scrapes_one_server_and_holds_what_its_page_answered(tmp_path, photos):
    from browser import require_browser

    require_browser()
    files, answers = photos
    env = {"BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db"), "PYTHONPATH": str(ROOT)}
    with voila(port=SERVER, env=env, log=tmp_path / "voila.log") as (url, log, proc), \
            prometheus(tmp_path, PROMETHEUS, [f"127.0.0.1:{SERVER}"]) as query, chromium() as browser:
        assert settles(query, "up", {(f"127.0.0.1:{SERVER}",): 1.0}) == {(f"127.0.0.1:{SERVER}",): 1.0}
        pool = json.loads((ROOT / "voila.json").read_text())["VoilaConfiguration"]["default_pool_size"]
        preheated = {(f"127.0.0.1:{SERVER}",): float(pool)}
        assert settles(query, "bear_kernels_preheated", preheated) == preheated

        page = open_app(browser, url)
        for name, data in files:
            upload_file(page, name, data, "image/jpeg")
            wait_card(page, name)
        upload_file(page, "visitor-notes.txt", b"not a photo at all", "text/plain")
        wait_card(page, "visitor-notes.txt")
        # One "That's wrong": the grizzly is said to be a teddy bear.
        grizzly = card(page, "visitor-grizzly.jpg")
        grizzly.get_by_role("button", name="That's wrong").click()
        grizzly.get_by_role("radio", name="Teddy bear").click()
        grizzly.get_by_text("Thanks! Stored as “Teddy bear”.").wait_for(timeout=30_000)

        v, here = version(), f"127.0.0.1:{SERVER}"
        assert answers["grizzly"] == 1, answers  # the example grizzly is answered as one: corrected to a teddy bear
        counted = {(answer, here, v): float(n) for answer, n in answers.items()}
        assert settles(query, "bear_answers_total", counted) == counted
        assert settles(query, "sum(bear_answer_seconds_count)", {(): 3.0}) == {(): 3.0}
        assert settles(query, "sum(bear_answer_probability_count)", {(): 3.0}) == {(): 3.0}
        from bear_classifier.inference.predict import served_classes

        none = {(here, v): float(answers[served_classes().none_label])}  # the rocket is none of these
        assert settles(query, "bear_none_of_these_total", none) == none
        rejected = {(here, "not_an_image"): 1.0}
        assert settles(query, "bear_rejected_uploads_total", rejected) == rejected
        want = {("grizzly", "teddy", here, v): 1.0}
        assert settles(query, "bear_corrections_total", want) == want
        # Every answer took under the 2 s the alert allows, on this server (the model was loaded before the first).
        assert query("sum(bear_answer_seconds_bucket{le='30.0'}) - sum(bear_answer_seconds_count)") == {(): 0.0}
        assert settles(query, "bear_kernels_busy", {(here,): 1.0}) == {(here,): 1.0}
        # Prometheus loaded the five alert rules, and none fires here.
        with urllib.request.urlopen(query.url + "/api/v1/rules", timeout=10) as r:
            rules = [rule["name"] for g in json.load(r)["data"]["groups"] for rule in g["rules"]]
        assert len(rules) == 5, rules
        assert query('ALERTS{alertstate="firing"}') == {}

        # No photo, file name or address in any label of ours.
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
            text = r.read().decode()
        assert "bear_answers_total" in text
        assert not any(word in text for word in ("visitor-", ".jpg", ".txt", "127.0.0.1"))

        # The page's server is public: /metrics forwarded by a proxy for a visitor is refused, with a sentence.
        request = urllib.request.Request(f"{url}/metrics", headers={"X-Forwarded-For": "203.0.113.7"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 403 and "scrape this server's own address" in refused.value.read().decode()

        # The kernel that answered dies: what it counted still counts, its files folded into the archive.
        folder = Path(tempfile.gettempdir()) / f"bear-metrics-{proc.pid}"
        [answered] = [k for k in kernels(proc) if (folder / f"counter_{k.pid}.db").exists()]
        answered.kill()
        gone = folder / f"counter_{answered.pid}.db"
        assert wait_for(lambda: query("bear_answers_total") == counted and not gone.exists(), 30)
        assert (folder / "counter_ended.db").exists() and (folder / "histogram_ended.db").exists()
        assert query("bear_corrections_total") == {("grizzly", "teddy", here, v): 1.0}
        assert query("sum(bear_answer_seconds_count)") == {(): 3.0}
        assert "Traceback" not in log.read_text()  # while serving (a kernel starting as the server stops may print one)


@contextmanager
def replicas(tmp_path: Path, n: int):
    """deploy/replicas.sh with `n` replicas, each with one preheated kernel (not four: this machine is small);
    yields the balancer's URL and each replica's port."""
    wrapper = tmp_path / "voila"  # replicas.sh runs $VOILA app.ipynb ...: the same, with a pool of one
    wrapper.write_text(f"#!/bin/sh\nexec {Path(sys.executable).parent / 'voila'} \"$@\" "
                       "--VoilaConfiguration.default_pool_size=1\n")
    wrapper.chmod(0o755)
    env = {**os.environ, "REPLICAS": str(n), "PORT": str(BALANCER), "FIRST_REPLICA_PORT": str(FIRST_REPLICA),
           "LOGS": str(tmp_path), "BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db"), "VOILA": str(wrapper),
           "PYTHONPATH": str(ROOT)}
    ports = [FIRST_REPLICA + i for i in range(n)]
    taken = [p for p in ports + [BALANCER] if socket.socket().connect_ex(("127.0.0.1", p)) == 0]
    assert not taken, f"ports {taken} are taken: stop what serves them first"
    run = subprocess.Popen(["deploy/replicas.sh"], cwd=ROOT, env=env, stdout=open(tmp_path / "replicas.log", "w"),
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        health = [f"http://127.0.0.1:{p}/voila/static/health.txt" for p in ports + [BALANCER]]
        assert wait_for(lambda: run.poll() is None and all(_up(u) for u in health), 180), \
            (tmp_path / "replicas.log").read_text()
        yield f"http://127.0.0.1:{BALANCER}", ports
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        run.wait(30)
        left = {port: proc for port in ports if (proc := replica_process(port)) is not None}
        for proc in left.values():  # ended before the assertion, so that a failure leaves nothing running
            proc.kill()
    assert not left, f"replicas on ports {list(left)} outlived deploy/replicas.sh"


def _up(url: str) -> bool:
    try:
        return urllib.request.urlopen(url, timeout=2).status == 200
    except OSError:
        return False


def test_prometheus_scrapes_three_replicas_behind_haproxy_and_sees_one_go_down(tmp_path, photos):
    from browser import require_browser

    require_browser()
    if not shutil.which("haproxy") and not os.access("/usr/sbin/haproxy", os.X_OK):
        missing("haproxy", "sudo apt-get install haproxy")
    files, answers = photos
    with replicas(tmp_path, 3) as (url, ports), \
            prometheus(tmp_path, REPLICAS_PROMETHEUS, [f"127.0.0.1:{p}" for p in ports]) as query, \
            chromium() as browser:
        targets = {(f"127.0.0.1:{p}",): 1.0 for p in ports}
        assert settles(query, "up", targets) == targets  # every replica's /metrics scraped
        # Three visitors through HAProxy, one photo each: leastconn spreads them; each counts where it was answered.
        pages = [open_app(browser, url, timeout_ms=240_000) for _ in files]
        for page, (name, data) in zip(pages, files):
            upload_file(page, name, data, "image/jpeg")
        for page, (name, _) in zip(pages, files):
            wait_card(page, name, timeout_ms=240_000)
        where = {}
        for page in pages:
            replica = next(c["value"] for c in page.context.cookies() if c["name"] == "BEAR_REPLICA")
            instance = f"127.0.0.1:{ports[int(replica[1:]) - 1]}"
            where[instance] = where.get(instance, 0) + 1
        want = {(instance,): float(n) for instance, n in where.items()}
        assert settles(query, "sum by (instance) (bear_answers_total)", want, timeout=90) == want
        v = version()
        want = {(answer, v): float(n) for answer, n in answers.items()}
        assert settles(query, "sum by (answer, version) (bear_answers_total)", want) == want

        # A replica stops: Prometheus sees it down, and BearReplicaDown goes pending (it fires after a minute).
        down = f"127.0.0.1:{ports[0]}"
        replica_process(ports[0]).send_signal(signal.SIGTERM)  # replicas.sh starts it again within seconds
        assert settles(query, f'min_over_time(up{{instance="{down}"}}[30s])', {(down,): 0.0}) == {(down,): 0.0}
        pending = {("BearReplicaDown", "pending", down, "critical"): 1.0}
        assert settles(query, 'max_over_time(ALERTS{alertname="BearReplicaDown"}[30s])', pending, timeout=30) == pending


def test_kernels_that_end_are_counted_by_why(tmp_path):
    """A visitor's address may hold one kernel here: their second page ends the first ("crowded")."""
    from browser import require_browser

    require_browser()
    env = {"BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db"), "PYTHONPATH": str(ROOT)}
    with voila("--VisitorKernels.kernels_per_address=1", port=CROWDED, env=env, log=tmp_path / "voila.log") as \
            (url, _, _), chromium() as browser:
        open_app(browser, url)
        assert scrape(url)[("bear_kernels_busy", ())] == 1
        open_app(browser, url)
        ended = ("bear_kernels_ended_total", (("why", "crowded"),))
        assert wait_for(lambda: scrape(url).get(ended) == 1, 30), scrape(url)
        assert scrape(url)[("bear_kernels_busy", ())] == 1


def scrape(url: str) -> dict:
    """{(sample name, labels): value} of a server's /metrics, read with prometheus_client's own parser."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as r:
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for family in text_string_to_metric_families(r.read().decode()) for s in family.samples}


def test_the_api_counts_its_answers_and_requests_as_the_page_does(tmp_path):
    """The API answers in the server's own process: its counts go to the same folder as the kernels'."""
    pytest.importorskip("bear_classifier.api", reason="the HTTP API is not in this checkout")
    env = {"BEAR_FEEDBACK_DB": str(tmp_path / "feedback.db"), "PYTHONPATH": str(ROOT)}
    with voila(port=API, env=env, log=tmp_path / "voila.log") as (url, _, _):
        assert wait_for(lambda: _up(f"{url}/api/ready"), 120)
        for data in [(EXAMPLES / "grizzly.jpg").read_bytes(), b"not a photo at all"]:  # the second: text named .jpg
            request = urllib.request.Request(f"{url}/api/classify", data=data, headers={"Content-Type": "image/jpeg"})
            try:
                urllib.request.urlopen(request, timeout=60).read()
            except urllib.error.HTTPError as e:
                assert e.code == 422, e.read()
        counted = scrape(url)
        assert counted[("bear_answers_total", (("answer", "grizzly"), ("version", version())))] == 1
        assert counted[("bear_rejected_uploads_total", (("reason", "not_an_image"),))] == 1
        assert counted[("bear_api_requests_total", (("status", "422"),))] == 1
        assert counted[("bear_api_requests_total", (("status", "200"),))] >= 2  # ready, then the grizzly
