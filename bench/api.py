"""This project's HTTP API against a minimal Gradio app, both serving the same export.onnx, printed side by side:

  servers   (a) `voila app.ipynb` with the API on the page's own server (POST /api/classify; BEAR_API_PER_MINUTE=0,
            as a deployer would set it for one trusted caller), (b) bench/gradio_app.py: gr.Interface with
            gr.Image → gr.Label, queue on, Gradio's defaults otherwise, answering with the same Classifier
  callers   each server's own Python client (bear_classifier.Client, gradio_client.Client), and a plain asyncio
            HTTP client (bench/api_load.py), at each concurrency for --seconds each, over the same photos of
            mixed sizes (examples/, and copies made here: a 12 MP phone photo, 1600 px, a 1024 px PNG, 160 px)
  figures   answers per second, p50 and p99 latency, the server process's peak RSS, errors; then the page's
            upload → answer (a 12 MP photo, timed in the page as bench/page.py does) idle and while the API is
            under load at the highest concurrency; then where one request's time goes, in this process
The bench environment holds Gradio, apart from this project's (run once, from the repository root):
  python3 -m venv .venv-bench && .venv-bench/bin/pip install gradio==6.31.0 onnxruntime==1.32.0 numpy pillow
Usage: python -m bench.api [--seconds 30] [--levels 1 8 32]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from bench import ROOT
from browser import free_port, serve, voila
from corpus import encode, photo

BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
HERE_ENV = {"PYTHONPATH": str(ROOT)}


def photos(folder: Path) -> list[Path]:
    """examples/ and resized copies of them: mixed sizes, as callers send."""
    from PIL import Image

    made = {"phone.jpg": (ROOT / "examples" / "grizzly.jpg", (4000, 3000), "JPEG"),
            "large.jpg": (ROOT / "examples" / "black-bear.jpg", (1600, 1067), "JPEG"),
            "teddy.png": (ROOT / "examples" / "teddy-bear.jpg", (1024, 1024), "PNG"),
            "small.jpg": (ROOT / "examples" / "coffee.jpg", (160, 107), "JPEG")}
    for name, (source, size, fmt) in made.items():
        Image.open(source).convert("RGB").resize(size, Image.LANCZOS).save(folder / name, fmt, quality=90)
    return sorted(ROOT.glob("examples/*.jpg")) + [folder / name for name in made]


def answered(url: str, photo_path: Path) -> bool:
    try:
        req = urllib.request.Request(url + "/api/classify", photo_path.read_bytes(), method="POST")
        return urllib.request.urlopen(req, timeout=10).status == 200
    except OSError:
        return False


@contextmanager
def api_server(tmp: Path, sample: Path):
    env = {"BEAR_API_PER_MINUTE": "0", "BEAR_FEEDBACK": "off"}
    with voila(log=tmp / "voila.log", env=env) as (url, _log, proc):
        deadline = time.time() + 120
        while not answered(url, sample):  # the model loads in the background
            if time.time() > deadline:
                raise RuntimeError(f"the API did not answer:\n{(tmp / 'voila.log').read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, proc


@contextmanager
def gradio_server(tmp: Path):
    if not BENCH_PYTHON.exists():
        sys.exit(f"no bench environment at {BENCH_PYTHON.parent.parent}: make it as this module's docstring says")
    port = free_port()
    cmd = [str(BENCH_PYTHON), "-m", "bench.gradio_app", "--port", str(port)]
    env = {**os.environ, **HERE_ENV, "GRADIO_ANALYTICS_ENABLED": "False"}
    with serve(cmd, port, "/", ROOT, tmp / "gradio.log", env) as (url, _log, proc):
        yield url, proc


class PeakRSS:
    """The peak resident memory of the server process (where the API and Gradio's app answer), and of it with its
    children (Voila's kernels, which serve the page, not the API), sampled while a run lasts."""

    def __init__(self, pid: int):
        import psutil

        self.process, self.peak, self.peak_all, self.done = psutil.Process(pid), 0, 0, threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self):
        import psutil

        while not self.done.wait(0.25):
            own = self.process.memory_info().rss
            children = 0
            for child in self.process.children(recursive=True):
                try:
                    children += child.memory_info().rss
                except psutil.NoSuchProcess:
                    pass
            self.peak, self.peak_all = max(self.peak, own), max(self.peak_all, own + children)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()


def load(server: str, client: str, url: str, paths: list[Path], concurrency: int, seconds: float) -> dict:
    python = BENCH_PYTHON if (server, client) == ("gradio", "own") else Path(sys.executable)
    cmd = [str(python), "-m", "bench.api_load", server, client, url, *map(str, paths),
           "--concurrency", str(concurrency), "--seconds", str(seconds)]
    r = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **HERE_ENV}, capture_output=True, text=True,
                       timeout=seconds + 300)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd[3:6])} failed:\n{r.stderr[-3000:]}")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    lat = sorted(out["latencies"])
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] * 1000) if lat else (lambda q: float("nan"))
    return {"rps": len(lat) / out["seconds"], "p50": pick(0.5), "p99": pick(0.99), "errors": out["n_errors"],
            "mean": statistics.mean(lat) * 1000 if lat else float("nan"), "why": out["errors"]}


def measure(name: str, url: str, proc, client: str, paths: list[Path], level: int, seconds: float) -> dict:
    load(name, client, url, paths[:2], 1, 1)  # warm: connections, caches, the first answer's costs
    with PeakRSS(proc.pid) as rss:
        figures = load(name, client, url, paths, level, seconds)
    figures["rss"], figures["rss_all"] = rss.peak / 2**20, rss.peak_all / 2**20
    print(f"  {name:6} {client:4} c={level:<3} {figures['rps']:6.1f}/s p50 {figures['p50']:6.0f} ms "
          f"p99 {figures['p99']:6.0f} ms  {figures['rss']:4.0f} MiB ({figures['rss_all']:.0f} with children)  errors {figures['errors']} {figures['why'][:1]}",
          file=sys.stderr)
    return figures


def page_under_load(url: str, paths: list[Path], level: int, tmp: Path, runs: int = 3) -> tuple[list, list]:
    """Upload → answer of a 12 MP photo on the page (seconds, timed in the page): idle, then under API load."""
    from bench.page import STOPWATCH_JS, answer_time, clear, copies, settle
    from browser import chromium, open_app

    big = copies(tmp / "page.jpg", encode(photo((4000, 3000), seed=2), "JPEG", quality=90), 2 * runs + 1)
    with chromium() as browser:
        page = open_app(browser, url, init_script=STOPWATCH_JS)
        settle(page, big[-1])
        idle = []
        for i in range(runs):
            idle.append(answer_time(page, big[i]))
            clear(page)
        busy, result = [], {}
        loader = threading.Thread(target=lambda: result.update(load("api", "http", url, paths, level, 15 + 10 * runs)))
        loader.start()
        time.sleep(5)  # the load reaches its steady state
        for i in range(runs):
            busy.append(answer_time(page, big[runs + i]))
            clear(page)
        loader.join()
    print(f"  page: idle {idle}, under load {busy}; the load meanwhile: {result.get('rps', 0):.1f}/s, "
          f"errors {result.get('errors')}", file=sys.stderr)
    return idle, busy


def where_time_goes(paths: list[Path], repeat: int = 5) -> dict[str, tuple[float, float]]:
    """Milliseconds of each step of one answer in this process, as the API takes them (one thread per forward):
    (the mean over the bench's photos of each photo's median, the 12 MP photo's median)."""
    import io

    from PIL import Image

    from bear_classifier.api.service import result
    from bear_classifier.inference.answer import read_photo
    from bear_classifier.inference.predict import Classifier

    clf = Classifier.load(threads=1)
    keys = ("decode", "decode_full", "resize", "forward", "json")
    per_photo: dict[str, dict[str, float]] = {}
    for path in paths:
        data, times = path.read_bytes(), {k: [] for k in keys}
        for _ in range(repeat):
            t0 = time.perf_counter()
            img = read_photo(data)  # the API's decode: a JPEG at 1/2-1/8 scale
            t1 = time.perf_counter()
            Image.open(io.BytesIO(data)).convert("RGB")  # what gr.Image does: every pixel
            t2 = time.perf_counter()
            pixels = clf.pixels(img)
            t3 = time.perf_counter()
            clf.session.run(None, {"pixels": pixels})
            t4 = time.perf_counter()
            pred = clf.predict(img)
            t5 = time.perf_counter()
            json.dumps(result(pred, clf.classes, {"sha256": "0" * 64, "date": None}))
            t6 = time.perf_counter()
            for key, seconds in zip(keys, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t6 - t5)):
                times[key].append(seconds * 1000)
        per_photo[path.name] = {k: statistics.median(v) for k, v in times.items()}
    return {k: (statistics.mean(p[k] for p in per_photo.values()), per_photo["phone.jpg"][k]) for k in keys}


def empty_round_trip(url: str, n: int = 200) -> float:
    """Mean milliseconds of GET /api/health on one keep-alive connection: network, HTTP and tornado, no photo."""
    import asyncio
    from urllib.parse import urlsplit

    from bench.api_load import Connection

    async def go() -> float:
        conn = Connection(urlsplit(url).hostname, urlsplit(url).port)
        await conn.request("GET", "/api/health")
        start = time.perf_counter()
        for _ in range(n):
            await conn.request("GET", "/api/health")
        conn.close()
        return (time.perf_counter() - start) / n * 1000

    return asyncio.run(go())


def ratio(a: float, b: float) -> str:
    return f"{a / b:5.2f}×" if b else "    -"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=30, help="per server, caller and concurrency (default 30)")
    p.add_argument("--levels", type=int, nargs="+", default=[1, 8, 32])
    args = p.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = photos(tmp)
        steps = where_time_goes(paths)  # first, on a machine not yet busy with the servers
        with api_server(tmp, paths[0]) as (api_url, api_proc), gradio_server(tmp) as (gradio_url, gradio_proc):
            for client in ("own", "http"):
                for level in args.levels:
                    for name, url, proc in (("api", api_url, api_proc), ("gradio", gradio_url, gradio_proc)):
                        rows[client, level, name] = measure(name, url, proc, client, paths, level, args.seconds)
            idle, busy = page_under_load(api_url, paths, max(args.levels), tmp)
            empty = empty_round_trip(api_url)
    print(f"\nThis project's API vs a minimal Gradio app, the same export.onnx, {args.seconds:.0f} s per row, "
          f"{os.cpu_count()} cores; photos: {', '.join(p.name for p in paths)}")
    print(f"{'caller':6} {'c':>3} | {'answers/s API  Gradio  ratio':>29} | {'p50 ms API Gradio':>17} | "
          f"{'p99 ms API Gradio  ratio':>24} | {'RSS MiB API Gradio':>18} | errors")
    for (client, level, name), f in rows.items():
        if name != "api":
            continue
        g = rows[client, level, "gradio"]
        print(f"{client:6} {level:>3} | {f['rps']:14.1f} {g['rps']:7.1f} {ratio(f['rps'], g['rps'])} | "
              f"{f['p50']:10.0f} {g['p50']:6.0f} | {f['p99']:10.0f} {g['p99']:6.0f} {ratio(f['p99'], g['p99'])} | "
              f"{f['rss']:14.0f} {g['rss']:6.0f} | {f['errors']} / {g['errors']}")
    print(f"\nThe page's upload → answer (12 MP photo): idle {', '.join(f'{s:.2f}' for s in idle)} s; with the API at "
          f"concurrency {max(args.levels)}: {', '.join(f'{s:.2f}' for s in busy)} s (goal: under 2 s)")
    one = rows["http", min(args.levels), "api"]["mean"]
    compute = sum(steps[k][0] for k in ("decode", "resize", "forward", "json"))
    print(f"\nWhere one API answer's time goes, in ms (the mean over the photos; the 12 MP photo), in this process "
          f"(medians of 5):")
    names = {"decode": "decode (the API's: JPEG at 1/2-1/8 scale)", "decode_full": "decode every pixel (gr.Image's)",
             "resize": "resize to the model's input", "forward": "forward pass (ONNX Runtime, heatmaps included)",
             "json": "the answer as JSON"}
    for key, words in names.items():
        print(f"  {words:48} {steps[key][0]:7.1f} {steps[key][1]:7.1f}")
    print(f"  together (the API's steps) {compute:.1f} of the {one:.1f} ms mean answer at concurrency "
          f"{min(args.levels)} over plain HTTP; an empty request (GET /api/health, keep-alive) takes {empty:.1f} ms; "
          f"the rest, {one - compute - empty:.1f} ms, is the body's upload and the server's turn-taking")
    print(f"Server RSS is the answering process's; Voila's, with its kernels (the page's, not the API's): "
          f"{max(f['rss_all'] for (c, l, n), f in rows.items() if n == 'api'):.0f} MiB at most")


if __name__ == "__main__":
    main()
