"""What counting costs a photo's answer: the page's own path (decode, predict, card) with the metrics off, on
(prometheus_client's multiprocess files, as in a kernel), and on with the answers log (one SQLite row).

  off          BEAR_METRICS=off, no answers log
  metrics      the counts /metrics reads: answers, probability and latency histograms
  metrics+log  the same, and the monitor's answers log
Interleaved photo by photo, so that drift hits all alike. Usage: python -m bench.metrics [--n 30] [--repeat 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

# As the server sets it for a kernel, before prometheus_client is imported: the counts go to files.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="bench-metrics-")

from bench.latency import sample_photos  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30, help="photos")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from bear_classifier import metrics
    from bear_classifier.page.app import Gallery
    from bear_classifier.page.feedback import FeedbackStore
    from bear_classifier.page.kernel import Model
    from bear_classifier.page.widget import Photo

    model = Model(delay=0)
    model.get(120)
    store = FeedbackStore(f"sqlite:///{Path(tempfile.mkdtemp()) / 'feedback.db'}", per_minute=None)
    plain, logged = Gallery(model, store=None), Gallery(model, store=store)
    logged.store.get(30)
    modes = {"off": ("off", plain), "metrics": ("on", plain), "metrics+log": ("on", logged)}
    photos = sample_photos(args.n)

    def answer(gallery: Gallery, data: bytes) -> None:
        photo = Photo("bench.jpg", data, len(data))
        with gallery.answering(photo):
            gallery.add(photo, model.predict(photo.image))

    times: dict[str, list[float]] = {m: [] for m in modes}
    for switch, gallery in modes.values():  # warm-up: first calls allocate, create the files and the table
        os.environ["BEAR_METRICS"] = switch
        answer(gallery, photos[0])
    for _ in range(args.repeat):
        for data in photos:
            for mode, (switch, gallery) in modes.items():
                os.environ["BEAR_METRICS"] = switch
                start = time.perf_counter()
                answer(gallery, data)
                times[mode].append((time.perf_counter() - start) * 1000)

    # The counting alone, many times: what the differences above are made of.
    os.environ["BEAR_METRICS"] = "on"
    alone = {}
    for name, fn, n in [("metrics.answered()", lambda: metrics.answered("grizzly", 0.97, "v", 0.2, False), 2000),
                        ("answers_log.answered()", lambda: store.answers_log.answered("grizzly", 0.97, "v"), 2000)]:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        alone[name] = (time.perf_counter() - start) * 1000 / n
    start = time.perf_counter()
    store.answers_log.flush()  # the log's writer, on its own thread: what it took to write those rows
    written = (time.perf_counter() - start) * 1000 / 2000
    alone["2000 answers written by the log, per row"] = alone["answers_log.answered()"] + written

    base = statistics.median(times["off"])
    print(f"upload→answer in the page's path, {len(photos)} photos × {args.repeat} ({os.cpu_count()} CPUs)")
    print(f"{'':<14} {'median ms':>10} {'p90 ms':>8} {'+median ms':>11} {'ratio':>7}")
    for mode, ms in times.items():
        med, p90 = statistics.median(ms), statistics.quantiles(ms, n=10)[-1]
        print(f"{mode:<14} {med:10.2f} {p90:8.2f} {med - base:+11.2f} {med / base:7.3f}x")
    for name, ms in alone.items():
        print(f"{name:<22} {ms * 1000:8.1f} µs per call")


if __name__ == "__main__":
    main()
