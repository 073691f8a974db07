"""Time from `models promote` to the first answer of the new version, with visitors uploading throughout:

  page    Voila servers (the app's voila.json, preheated kernels; --replicas of them, sharing the models folder as
          replicas do) and one new visitor after another in headless Chromium, taking the replicas in turn, each
          opening the page and uploading a photo; the version is promoted mid-stream. Measured:
          promote → the first card that names the new version, the old-version answers after the promote
          (should be none), and the error cards (should be none); and a page that answered before the
          promote: it keeps its version and says so
  server  Served.get() as an API calls it per request, requests back to back on a thread: promote → first
          answer of the new version, over several promotions; and the cost of the call when nothing changed

The two versions are the checkout's model re-saved with different doc strings (other bytes, same answers), so
only the switch is measured. Usage: python -m bench.promote [--visitors 6] [--replicas 2] [--port 18350]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import ROOT
from bear_classifier.inference.versions import Models, Served


def twin(models: Path, doc: str) -> str:
    """The checkout's model re-saved with another doc string, added to `models`: another version, the same answers."""
    import onnx

    folder = Path(models).parent / f"twin-{doc}"
    folder.mkdir()
    graph = onnx.load(str(ROOT / "export.onnx"))
    graph.doc_string = doc
    onnx.save(graph, str(folder / "export.onnx"))
    card = json.loads((ROOT / "export.json").read_text())
    card["serving"]["sha256"] = hashlib.sha256((folder / "export.onnx").read_bytes()).hexdigest()
    card["exported"] = "2026-12-07T12:00:00+00:00"
    (folder / "export.json").write_text(json.dumps(card))
    return Models(models).add(folder / "export.onnx").name


def server_switch(models: Models, a: str, b: str, rounds: int = 10) -> tuple[list[float], int, float]:
    """Seconds from each promotion to the first answer of the promoted version; errors; µs per unchanged call."""
    from PIL import Image

    models.serve(a, "promote")
    served, img = Served(models), Image.new("RGB", (224, 224), (120, 90, 60))
    answers, errors, stop = [], [], threading.Event()

    def requests():
        while not stop.is_set():
            try:
                answers.append((time.perf_counter(), served.get().predict(img).version))
            except Exception as e:  # noqa: BLE001 -- counted: a visitor would have seen it
                errors.append(e)

    thread = threading.Thread(target=requests)
    thread.start()
    switches = []
    for i in range(rounds):
        target = b if i % 2 == 0 else a
        while not answers:
            time.sleep(0.01)
        promoted = time.perf_counter()
        models.serve(target, "promote")
        while not (answers[-1][0] > promoted and answers[-1][1] == target):
            time.sleep(0.001)
        switches.append(next(t for t, v in answers if t > promoted and v == target) - promoted)
        time.sleep(0.2)
    stop.set()
    thread.join()
    start = time.perf_counter()
    for _ in range(10000):
        served.get()
    return switches, len(errors), (time.perf_counter() - start) * 100


def page_switch(models: Models, a: str, b: str, visitors: int, port: int, work: Path, replicas: int = 1) -> dict:
    """New visitors one after another, taking the replicas in turn; the version promoted after a third of them."""
    from contextlib import ExitStack

    from browser import chromium, open_app, serve, upload_file
    from corpus import encode, photo

    models.serve(a, "promote")
    env = {**os.environ, "BEAR_MODELS": str(models.root), "BEAR_FEEDBACK_DB": str(work / "feedback.db"),
           "JUPYTER_PATH": str(ROOT / "share" / "jupyter"), "JUPYTER_CONFIG_PATH": str(ROOT / "share" / "jupyter" / "config"),
           "PYTHONPATH": str(ROOT)}
    jpeg = encode(photo((640, 480)), "JPEG")
    seen, promoted = [], None
    with ExitStack() as stack:
        urls = [stack.enter_context(serve(
            [sys.executable, "-m", "voila", "app.ipynb", f"--port={port + r}", "--no-browser", "--Voila.ip=127.0.0.1"],
            port + r, "/voila/static/", ROOT, work / f"voila-{r}.log", env))[0] for r in range(replicas)]
        browser = stack.enter_context(chromium())
        early = open_app(browser, urls[0])  # a visitor who answers once before the promote, and once after it
        upload_file(early, "early.jpg", jpeg, "image/jpeg")
        early.locator(".bear-card").first.wait_for(timeout=120_000)
        for i in range(visitors * replicas):
            if i == visitors * replicas // 3:
                promoted = time.perf_counter()
                models.serve(b, "promote")
            opened = time.perf_counter()
            page = open_app(browser, urls[i % replicas])
            upload_file(page, f"v{i}.jpg", jpeg, "image/jpeg")
            card = page.locator(".bear-card").first
            card.wait_for(timeout=120_000)
            text = card.inner_text()
            seen.append((opened, time.perf_counter(), i % replicas, b if f"Model version {b}" in text else
                         a if f"Model version {a}" in text else "error: " + text[:80]))
            page.context.close()
        upload_file(early, "late.jpg", jpeg, "image/jpeg")  # opened before the promote: keeps its version
        early.locator(".bear-card", has_text="late.jpg").wait_for(timeout=120_000)
        early.locator(".bear-version").wait_for(timeout=10_000)
        kept = (f"Model version {a}" in early.locator(".bear-card", has_text="late.jpg").inner_text(),
                early.locator(".bear-version").inner_text())
    after = [(o, t, r, v) for o, t, r, v in seen if t > promoted]
    # per replica: its first visitor after the promote, (came, answered) in seconds after the promote, and the version
    first = [next(((max(0.0, o - promoted), t - promoted, v) for o, t, r, v in after if r == replica), None)
             for replica in range(replicas)]
    return dict(first=first, old_after=sum(v == a for *_, v in after),
                errors=sum(v.startswith("error") for *_, v in seen), answers=len(seen), kept=kept)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--visitors", type=int, default=6, help="per replica; at most 7: a server keeps 8 kernels per "
                   "address (VisitorKernels), the early page's included")
    p.add_argument("--replicas", type=int, default=1, help="Voila servers sharing the models folder and the store")
    p.add_argument("--port", type=int, default=18350)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        models = Models(Path(tmp) / "models")
        a, b = twin(models.root, "a"), twin(models.root, "b")
        switches, errors, call_us = server_switch(models, a, b)
        print(f"server  promote → first new-version answer: median {statistics.median(switches):.3f} s, "
              f"max {max(switches):.3f} s over {len(switches)} promotions; {errors} errors; "
              f"Served.get() unchanged: {call_us:.1f} µs a call")
        r = page_switch(models, a, b, args.visitors, args.port, Path(tmp), args.replicas)
        for replica, first in enumerate(r["first"]):
            came, answered, version = first or (0, 0, "nobody came")
            print(f"page    replica {replica}: its first new visitor after the promote came at {came:.1f} s and got "
                  f"{'the new' if version == b else 'THE OLD' if version == a else version} version's answer at "
                  f"{answered:.1f} s (opening the page, uploading)")
        print(f"page    old-version answers to new visitors after the promote: {r['old_after']}; error cards: "
              f"{r['errors']} of {r['answers']} answers")
        print(f"page    answered before the promote: kept its version: {r['kept'][0]}; says: {r['kept'][1]!r}")


if __name__ == "__main__":
    main()
