"""Visitors arriving together vs one visitor alone, on one `voila` server as `make app` serves it (voila.json's
preheated pool), side by side in one run:

  button   seconds from navigation start until an "Upload photos" button is visible, enabled and on top
           (the template's early button or the widget), timed in the page
  answer   seconds from navigation start until the first answer card shows, the visitor choosing a photo
           the moment the button is usable (the early button keeps it until the widget takes it)

Each visitor is a fresh Chromium context. Arriving visitors start their navigation `--gap` seconds apart
without waiting for the server to answer the previous one. Between the runs the pool is left to refill.
Usage: python -m bench.visitors [--visitors 4] [--gap 1] [--pool N] [--fill-delay S]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


from bench import ROOT
from browser import chromium, kernels, voila, wait_for
from corpus import encode, photo
from playwright.sync_api import Error as PlaywrightError

# Timed in the page from its navigation start; "answer" is the first card in the DOM.
TIMER_JS = """
window.visit = {};
new MutationObserver(() => {
  const v = window.visit;
  const button = [...document.querySelectorAll('button')].find(b => b.textContent.includes('Upload photos'));
  if (v.button === undefined && button && !button.disabled && button.getClientRects().length) {
    const r = button.getBoundingClientRect();
    if (button.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2))) { v.button = performance.now(); }
  }
  if (v.answer === undefined && document.querySelector('.bear-card')) { v.answer = performance.now(); }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""
# The file input behind whichever upload button is showing.
INPUT = "#bear-early input[type=file], #rendered_cells .bear-input input[type=file]"


def arrive(browser, url: str) -> object:
    """A new visitor starts loading the page; returns at once (the server may not have answered yet)."""
    page = browser.new_context(viewport={"width": 900, "height": 900}).new_page()
    page.add_init_script(TIMER_JS)
    page.evaluate("url => { window.location.href = url; }", url)
    return page


def seen(page, what: str) -> bool:
    try:
        return page.evaluate(f"Boolean(window.visit && window.visit.{what} !== undefined)")
    except PlaywrightError:  # still navigating: the page's own document isn't there yet
        return False


def follow(pages: list, picture: Path, timeout: float = 120) -> list[tuple[float, float]]:
    """Each visitor chooses the photo as soon as their button is usable; (button, answer) seconds per visitor."""
    chosen, deadline = set(), time.time() + timeout
    while time.time() < deadline:
        for i, page in enumerate(pages):
            if i not in chosen and seen(page, "button"):
                page.locator(INPUT).first.set_input_files(str(picture))
                chosen.add(i)
        if len(chosen) == len(pages) and all(seen(p, "answer") for p in pages):
            break
        time.sleep(0.05)
    return [tuple(x / 1000 if x is not None else float("nan") for x in p.evaluate("[window.visit.button, window.visit.answer]"))
            for p in pages]  # nan: not within the timeout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--visitors", type=int, default=4)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--pool", type=int, help="default_pool_size (default: voila.json's)")
    parser.add_argument("--fill-delay", type=float, help="VoilaKernelManager.fill_delay (default: voila.json's)")
    args = parser.parse_args()
    config = json.loads((ROOT / "voila.json").read_text())
    pool = args.pool if args.pool is not None else config["VoilaConfiguration"]["default_pool_size"]
    delay = args.fill_delay if args.fill_delay is not None else config["VoilaKernelManager"]["fill_delay"]
    picture = Path(tempfile.mkdtemp()) / "bear.jpg"
    picture.write_bytes(encode(photo(seed=1), "JPEG"))
    extra = [f"--VoilaConfiguration.default_pool_size={pool}", f"--VoilaKernelManager.fill_delay={delay}"]
    with voila(*extra) as (url, _, proc), chromium() as browser:
        ready = lambda: len(kernels(proc)) >= pool and all(k.cpu_percent(0.2) < 5 for k in kernels(proc))  # noqa: E731
        wait_for(ready, 180)
        alone = follow([arrive(browser, url)], picture)[0]
        wait_for(lambda: len(kernels(proc)) >= pool + 1, 180)
        wait_for(ready, 180)
        pages = []
        for _ in range(args.visitors):
            pages.append(arrive(browser, url))
            time.sleep(args.gap)
        together = follow(pages, picture)
        rss = sorted(k.memory_info().rss / 2**20 for k in kernels(proc))
    print(f"pool {pool}, fill_delay {delay} s, {args.visitors} visitors {args.gap:g} s apart vs one alone")
    print(f"{'visitor':>8} {'button s':>9} {'x alone':>8} {'answer s':>9} {'x alone':>8}")
    print(f"{'alone':>8} {alone[0]:9.2f} {1:8.2f} {alone[1]:9.2f} {1:8.2f}")
    for i, (button, answer) in enumerate(together, 1):
        print(f"{i:>8} {button:9.2f} {button / alone[0]:8.2f} {answer:9.2f} {answer / alone[1]:8.2f}")
    print(f"kernel RSS (model loaded): {rss[0]:.0f}-{rss[-1]:.0f} MiB over {len(rss)} kernels")


if __name__ == "__main__":
    main()
