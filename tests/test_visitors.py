"""Many visitors: one kernel each, every visitor sees their own answer, idle kernels are culled."""
import csv
import json

from browser import ROOT, chromium, kernels, open_app, require_browser, upload_file, voila, wait_card, wait_for
from conftest import BEARS
from corpus import encode, photo

VISITORS = 5


def photos() -> list[tuple[str, bytes, str | None]]:
    """One photo per visitor: real bears of different species when the shared data is here."""
    if not BEARS.is_dir():
        return [(f"generated{i}.jpg", encode(photo(seed=i), "JPEG"), None) for i in range(VISITORS)]
    rows = list(csv.DictReader(open(ROOT / "data" / "valid.csv")))
    picks = [next(r for r in rows[k::7] if r["label"] == label)
             for k, label in enumerate(["grizzly", "black", "teddy", "grizzly", "black"])]
    return [(f"visitor{i}_{r['label']}.jpg", (BEARS / r["file"]).read_bytes(), r["label"]) for i, r in enumerate(picks)]


def test_five_concurrent_visitors_then_idle_kernels_are_culled():
    require_browser()
    # Open tabs are culled too once idle (voila.json: cull_connected): long enough for all five to get answers.
    cull = ["--MappingKernelManager.cull_idle_timeout=60", "--MappingKernelManager.cull_interval=2"]
    config = json.loads((ROOT / "voila.json").read_text())["VoilaConfiguration"]
    pool = config.get("default_pool_size", 1) if config.get("preheat_kernel") else 0
    with voila(*cull) as (url, log, proc), chromium() as browser:
        assert wait_for(lambda: len(kernels(proc)) == pool, timeout=60), "the preheated kernel did not start"
        baseline = len(kernels(proc))
        pages = [open_app(browser, url) for _ in range(VISITORS)]  # each page: its own context, its own kernel
        # the first page takes the preheated kernel; the pool refills after voila.json's fill_delay
        assert wait_for(lambda: len(kernels(proc)) == baseline + VISITORS, timeout=60)

        uploads = photos()
        for page, (name, data, _) in zip(pages, uploads):  # all five upload before anyone gets an answer
            upload_file(page, name, data, "image/jpeg")
        for page, (name, _, label) in zip(pages, uploads):
            text = wait_card(page, name, timeout_ms=180_000)
            assert (f"Prediction: {label}; Probability: 0." if label else "Prediction: ") in text, text
            body = page.inner_text("body")
            others = [n for n, _, _ in uploads if n != name]
            assert not any(n in body for n in others)  # nobody sees another visitor's photo

        rss = [k.memory_info().rss / 2**20 for k in kernels(proc)]
        print(f"kernel RSS with the model loaded: {min(rss):.0f}-{max(rss):.0f} MiB")  # README: Many visitors
        for page in pages:
            page.context.close()
        assert wait_for(lambda: len(kernels(proc)) == baseline, timeout=150), "idle kernels were not culled"


def test_the_server_says_once_at_start_when_jupyter_server_or_voila_is_not_the_version_it_was_written_for(
        monkeypatch, caplog):
    from bear_classifier import server

    assert server.version_mismatches() == {}  # the pinned versions are the ones installed
    monkeypatch.setitem(server.WRITTEN_FOR, "voila", "0.4.0")
    with caplog.at_level("WARNING", logger="bear_classifier.server"):
        server.warn_on_other_versions()
    [line] = caplog.messages
    assert "voila 0.5.13 (written for 0.4.0)" in line and "pip install -r requirements-serve.txt" in line
    assert "docs/security.md" in line
