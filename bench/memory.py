"""A visitor's kernel memory under hostile photos: a real `voila app.ipynb` kernel, photos sent over the widget's
comm as any client can (tests/test_kernel_limits.py's raw websocket client), RSS read from /proc.

  after one photo          the kernel with the model loaded and one answer given
  three 8000×6000 PNGs     148 KB each, sent whole as a client that skips the page's script can (the page's script
                           shrinks a photo of over 4 megapixels before sending it: --page)
  ... with transparency    the same, half transparent (RGBA: 192 MB decoded, then blended on white)
  100 photos of every kind the hardening corpus (29 kinds, an 8000×6000 JPEG among them) and 8000×6000 PNGs,
                           in batches of 20: the gallery keeps its 24 newest cards
  after "Clear"            the Clear button pressed over the comm
  peak                     VmHWM: the most the kernel held at once (one 8000×6000 photo decoded: 192 MB)

With --page, the same PNGs are also given to the page itself, through a browser and its "Upload photos" button, in a
second visitor's kernel: what a visitor's big photos cost.

Usage: python -m bench.memory [--photos 100] [--page]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

from browser import chromium, kernels, open_app, upload_files, voila, wait_card
from corpus import bad_uploads, encode, photo, valid_uploads
from test_kernel_limits import Visitor, big_png
from wire import kernel_id, send


def memory(proc, kernel: str) -> tuple[float, float]:
    """(RSS, peak RSS) of the kernel `kernel` in MiB."""
    [mine] = [k for k in kernels(proc) if any(kernel in part for part in k.cmdline())]
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{mine.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def through_the_page(url: str, proc, photos: list[tuple[str, bytes]]) -> tuple[float, float]:
    """(RSS, peak) of a new visitor's kernel after its page is given `photos` through "Upload photos", one by one."""
    with chromium() as browser:
        page = open_app(browser, url)
        for name, data in photos:
            upload_files(page, (name, data, "image/png"))
            wait_card(page, name)
        return memory(proc, kernel_id(page.content().encode()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=100)
    parser.add_argument("--page", action="store_true", help="also give the big PNGs to the page, through a browser")
    args = parser.parse_args()
    png = big_png()
    kinds = [(name, data) for name, data, _ in valid_uploads() + bad_uploads()] + [("big.png", png)] * 6
    rows = []
    with voila(env={"BEAR_FEEDBACK": "off"}) as (url, _, proc):
        visitor = Visitor(url)
        try:
            visitor.upload([("warm-up.jpg", encode(photo(), "JPEG"))])
            rows.append(("after one photo", *memory(proc, visitor.kernel)))
            visitor.upload([(f"big{i}.png", png) for i in range(3)])
            rows.append(("+ three 8000×6000 PNGs", *memory(proc, visitor.kernel)))
            clear = encode(Image.new("RGBA", (8000, 6000), (90, 120, 60, 128)), "PNG")
            visitor.upload([(f"clear{i}.png", clear) for i in range(3)])
            rows.append(("+ three with transparency", *memory(proc, visitor.kernel)))
            for start in range(0, args.photos, 20):
                visitor.upload([kinds[(start + i) % len(kinds)] for i in range(min(20, args.photos - start))])
            rows.append((f"+ {args.photos} photos of every kind", *memory(proc, visitor.kernel)))
            bar = visitor.find(lambda s: "cleared" in s and "count" in s)  # the gallery's bar (gallery.js): "Clear"
            send(visitor.ws, "comm_msg", {"comm_id": bar, "data": {"method": "custom", "content": {"kind": "clear"}}})
            visitor.pump(lambda m: visitor.widgets[bar].get("count") == 0, seconds=30)
            rows.append(("after Clear", *memory(proc, visitor.kernel)))
        finally:
            visitor.close()
        if args.page:
            rows.append(("the page, the same six PNGs", *through_the_page(
                url, proc, [(f"big{i}.png", png) for i in range(3)] + [(f"clear{i}.png", clear) for i in range(3)])))
    print(f"{'kernel memory (MiB)':<32} {'RSS':>8} {'peak':>8}")
    for name, rss, peak in rows:
        print(f"{name:<32} {rss:>8.0f} {peak:>8.0f}")


if __name__ == "__main__":
    main()
