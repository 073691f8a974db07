"""The page in headless Chromium, reference notebook vs app.ipynb, each under its own `voila` server:

  time to interactive   timed inside the page from navigation start: "button usable" when an
                        "Upload photo" button is visible, enabled and on top (the app template's
                        early button, or the widget), "widgets live" when the FileUpload widget is;
                        cold kernel (one visitor at a time: the previous visitor's kernel is gone),
                        then with Voila's preheated kernels (--preheat_kernel, pool of 1)
  upload → answer       a 12 MP phone photo, once the page has settled, timed inside the page:
                        from the file input's change event to the answer's text in the DOM;
                        and for the app, 10 phone photos chosen at once: to the last card, with the
                        page's longest stall meanwhile (a 50 ms timer's worst lateness)
  kernel memory         peak RSS (VmHWM) after load, and after 50 predictions
  Voila's floor         cold-kernel "widgets live" for a notebook of one FileUpload under plain Voila:
                        what any Voila page pays (a kernel starting, Voila's front end) before its own cells
Usage: python -m bench.page [--runs 3]
"""
from __future__ import annotations

import argparse
import tempfile
import statistics
import sys
import time
from pathlib import Path


from bench import ROOT
from browser import chromium, kernels, open_app, voila, wait_for
from corpus import encode, photo

APPS = {"reference": ROOT / "bench" / "reference", "app": ROOT}
CULL = ["--MappingKernelManager.cull_idle_timeout=4", "--MappingKernelManager.cull_interval=2"]
PREHEAT = ["--preheat_kernel=True", "--pool_size=1", "--VoilaKernelManager.fill_delay=20"]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


READY = "#rendered_cells .widget-upload, #rendered_cells .bear-upload"  # the reference's FileUpload, or ours


def time_to_interactive(browser, url: str) -> tuple[float, float, object]:
    """Seconds from navigation start until an upload button is usable, and until the widget is live."""
    page = open_app(browser, url, init_script=TTI_JS + STOPWATCH_JS, ready=READY)
    page.wait_for_function("window.tti.usable !== undefined && window.tti.live !== undefined")
    usable, live = page.evaluate("[window.tti.usable, window.tti.live]")
    return usable / 1000, live / 1000, page


# Timed in the page (performance.now() counts from navigation start), so the harness's own start-up
# and polling don't count. Usable: the button can be clicked (nothing covers it) and takes a file.
TTI_JS = """
window.tti = {};
new MutationObserver((records, observer) => {
  const button = [...document.querySelectorAll('button')].find(b => b.textContent.includes('Upload'));
  if (window.tti.usable === undefined && button && !button.disabled && button.getClientRects().length) {
    const r = button.getBoundingClientRect();
    if (button.contains(document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2))) {
      window.tti.usable = performance.now();
    }
  }
  const widget = document.querySelector('#rendered_cells .widget-upload, #rendered_cells .bear-input');
  if (window.tti.live === undefined && widget && widget.offsetParent) { window.tti.live = performance.now(); }
  if (window.tti.usable !== undefined && window.tti.live !== undefined) { observer.disconnect(); }
}).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
"""


# Timestamps taken in the page, so the test harness's own round trips don't count: the file input's
# change event (the visitor's choice reaches the page) and the first DOM change showing the answer.
# FileUpload's <input> is never attached to the document, so the listener goes on when it is clicked.
STOPWATCH_JS = """
window.stopwatch = {};
const click = HTMLInputElement.prototype.click;
HTMLInputElement.prototype.click = function () {
  if (this.type === 'file') {
    this.addEventListener('change', () => {
      window.stopwatch = {change: performance.now(), expect: window.stopwatchExpect};
    }, {once: true});
  }
  return click.call(this);
};
new MutationObserver(records => {
  const w = window.stopwatch;
  if (w.change && !w.answer && records.some(r => (r.target.textContent || '').includes('Prediction:'))) {
    w.answer = performance.now();
  }
  if (w.change && w.expect && !w.last && document.querySelectorAll('.bear-answer').length >= w.expect) {
    w.last = performance.now();
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
let tick = performance.now();
setInterval(() => { const now = performance.now(); const w = window.stopwatch;
  if (w.change && !w.last) { w.stall = Math.max(w.stall || 0, now - tick - 50); } tick = now; }, 50);
"""


def choose(page, paths) -> None:
    with page.expect_file_chooser() as chooser:
        page.locator("button:visible", has_text="Upload").first.click()
    chooser.value.set_files(paths)


def batch_time(page, paths: list[Path]) -> tuple[float, float]:
    """(seconds from choosing `paths` at once to the last card, the page's longest stall meanwhile in seconds)."""
    page.evaluate(f"window.stopwatchExpect = {len(paths)}")
    choose(page, [str(p) for p in paths])
    page.wait_for_function("window.stopwatch.last !== undefined", timeout=300_000)
    page.evaluate("window.stopwatchExpect = undefined")
    return page.evaluate("[(window.stopwatch.last - window.stopwatch.change) / 1000, (window.stopwatch.stall || 0) / 1000]")


def answer_time(page, path: Path) -> float:
    """Seconds from the page receiving the chosen file until the answer shows (timed in the page)."""
    choose(page, str(path))
    page.get_by_text("Prediction:").first.wait_for(timeout=120_000)
    page.wait_for_function("window.stopwatch.answer !== undefined")
    return page.evaluate("(window.stopwatch.answer - window.stopwatch.change) / 1000")


def settle(page, path: Path) -> None:
    """Wait until the page has answered once (the app's model loads in the background)."""
    answer_time(page, path)
    clear(page)


def clear(page) -> None:
    page.evaluate("""() => { for (const el of document.querySelectorAll('.widget-label, .bear-answer'))
                                 if (el.textContent.startsWith('Prediction:')) el.textContent = ''; }""")


def copies(path: Path, data: bytes, n: int) -> list[Path]:
    """n files with the same photo: a file input fires no change event for the same file twice."""
    out = [path.with_name(f"{path.stem}{i}{path.suffix}") for i in range(n)]
    for p in out:
        p.write_bytes(data)
    return out


def cold_loads(browser, url: str, proc, runs: int) -> list[tuple[float, float]]:
    """(button usable, widgets live) in seconds for `runs` visitors one at a time, each with a cold kernel."""
    times = []
    for _ in range(runs):
        wait_for(lambda: not kernels(proc), 120)  # the last visitor's kernel is culled first
        usable, live, page = time_to_interactive(browser, url)
        times.append((usable, live))
        page.context.close()
    return times


def measure(name: str, cwd: Path, runs: int, tmp: Path) -> dict:
    bigs = copies(tmp / "phone.jpg", encode(photo((4000, 3000), seed=2), "JPEG", quality=90), runs)
    smalls = copies(tmp / "small.jpg", encode(photo((640, 480), seed=3), "JPEG"), 51)
    out = {}
    with voila(*CULL, "--preheat_kernel=False", cwd=cwd) as (url, _, proc), chromium() as browser:
        cold = cold_loads(browser, url, proc, runs)
        out["tti_cold"], out["live_cold"] = [usable for usable, _ in cold], [live for _, live in cold]
        _, _, page = time_to_interactive(browser, url)
        settle(page, smalls[-1])
        (kernel,) = [k for k in kernels(proc)][-1:]
        out["rss_load"] = peak_rss_mib(kernel.pid)
        answers = []
        for i in range(runs):
            answers.append(answer_time(page, bigs[i]))
            clear(page)
        if name == "app":
            out["batch"], out["stall"] = [], []
            for i in range(runs):
                page.get_by_role("button", name="Clear").click()
                last, stall = batch_time(page, copies(tmp / f"batch{i}.jpg", bigs[0].read_bytes(), 10))
                out["batch"].append(last)
                out["stall"].append(stall)
            page.get_by_role("button", name="Clear").click()
        for i in range(50 - runs):
            answer_time(page, smalls[i])
            clear(page)
        out["answer"] = answers
        out["rss_50"] = peak_rss_mib(kernel.pid)
    with voila(*PREHEAT, cwd=cwd) as (url, _, proc), chromium() as browser:
        out["tti_preheated"], out["live_preheated"] = [], []
        for visit in range(runs):
            wait_for(lambda: len(kernels(proc)) >= 1 + visit, 180)  # wait for the pool to refill
            time.sleep(25)  # the pooled kernel finishes executing the notebook
            usable, live, page = time_to_interactive(browser, url)
            out["tti_preheated"].append(usable)
            out["live_preheated"].append(live)
            page.context.close()
    print(f"{name}: done", file=sys.stderr)
    return out


def floor(runs: int, tmp: Path) -> list[float]:
    """Cold-kernel "widgets live" (s) of a notebook holding one FileUpload, under plain Voila."""
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import ipywidgets\nipywidgets.FileUpload()")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp / "floor.ipynb")
    with voila(*CULL, "--preheat_kernel=False", notebook="floor.ipynb", cwd=tmp) as (url, _, proc), \
            chromium() as browser:
        return [live for _, live in cold_loads(browser, url, proc, runs)]


def fmt(xs) -> str:
    if isinstance(xs, float):
        return f"{xs:8.0f}"
    return f"{statistics.median(xs):8.2f} ({min(xs):.2f}-{max(xs):.2f})"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    if not (APPS["reference"] / "export.pkl").exists():
        from bench.reference.make_reference import main as make_reference

        make_reference()
    with tempfile.TemporaryDirectory() as tmp:
        res = {name: measure(name, cwd, args.runs, Path(tmp)) for name, cwd in APPS.items()}
        res["floor"] = floor(args.runs, Path(tmp))
    rows = [("cold kernel: upload button usable (s)", "tti_cold"),
            ("cold kernel: widgets live (s)", "live_cold"),
            ("preheated kernel: upload button usable (s)", "tti_preheated"),
            ("preheated kernel: widgets live (s)", "live_preheated"),
            ("upload → answer, 12 MP photo (s)", "answer"),
            ("kernel peak RSS after load (MiB)", "rss_load"),
            ("kernel peak RSS after 50 predictions (MiB)", "rss_50")]
    print(f"median (min-max) of {args.runs} runs")
    print(f"{'':<44} {'reference':>24} {'app':>24}   app/ref")
    for label, key in rows:
        a, r = res["app"][key], res["reference"][key]
        ratio = (statistics.median(a) / statistics.median(r)) if isinstance(a, list) else a / r
        print(f"{label:<44} {fmt(r):>24} {fmt(a):>24}   {ratio:6.2f}")
    ref = statistics.median(res["reference"]["live_cold"])
    print(f"{'cold kernel: widgets live, Voila floor (s)':<44} {'':>24} {fmt(res['floor']):>24}   "
          f"{statistics.median(res['floor']) / ref:6.2f}   (a notebook of one FileUpload, plain Voila)")
    for label, key in [("batch of 10 phone photos → last card (s)", "batch"),
                       ("longest page stall during the batch (s)", "stall")]:
        print(f"{label:<44} {'one photo at a time':>24} {fmt(res['app'][key]):>24}")
    size = {n: (APPS[n] / "export.pkl").stat().st_size / 2**20 for n in APPS}
    print(f"{'export.pkl size (MiB)':<44} {size['reference']:>24.1f} {size['app']:>24.1f}   "
          f"{size['app'] / size['reference']:6.2f}")


if __name__ == "__main__":
    main()
