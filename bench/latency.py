"""Per-image latency in a warm process: the reference's learn.predict, the app's path, and the floors.

  reference  bytes → PILImage.create → learn.predict            (fastai resnet18, as bear_voila does)
  app        bytes → open_image → Classifier.predict             (what the page runs per photo: export.onnx)
  floors     the bare forward pass on prepared pixels: ONNX Runtime (served), and the same network as
             TorchScript (how the page served it before)
Usage: python -m bench.latency [--n 20] [--repeat 3]
"""
from __future__ import annotations

import argparse
import csv
import statistics
import time

import torch

from bench import ROOT

BEARS = ROOT.parent / "shared" / "data" / "bears"
REFERENCE = ROOT / "bench" / "reference" / "export.pkl"


def sample_photos(n: int) -> list[bytes]:
    """Real photos from the validation list when the shared data is here, else generated ones."""
    if BEARS.is_dir():
        rows = list(csv.DictReader(open(ROOT / "data" / "valid.csv")))
        return [(BEARS / r["file"]).read_bytes() for r in rows[:: max(1, len(rows) // n)][:n]]
    from corpus import encode, photo

    return [encode(photo((400, 300), seed=i), "JPEG") for i in range(n)]


def phone_photo() -> bytes:
    """A 12-megapixel (4000x3000) JPEG, the size a phone uploads."""
    from corpus import encode, photo

    return encode(photo((4000, 3000), seed=1), "JPEG", quality=90)


def timed(paths: dict, items: list, repeat: int) -> dict[str, list[float]]:
    """Milliseconds per call for each path, interleaved item by item so drift hits all alike."""
    for fn, xs in paths.values():
        fn(xs[0])  # warm-up: first calls allocate
    out = {name: [] for name in paths}
    for _ in range(repeat):
        for i in range(len(items)):
            for name, (fn, xs) in paths.items():
                start = time.perf_counter()
                fn(xs[i])
                out[name].append((time.perf_counter() - start) * 1000)
    return out


def row(name: str, ms: list[float], base: float | None) -> str:
    med = statistics.median(ms)
    ratio = f"{med / base:6.2f}x" if base else "      "
    return f"{name:<42} {med:8.1f} {min(ms):8.1f} {max(ms):8.1f}   {ratio}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    if not REFERENCE.exists():
        from bench.reference.make_reference import main as make_reference

        make_reference()
    from fastai.vision.all import PILImage, load_learner

    from bear_classifier.model.export import Serving, serving_transforms
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier
    from bear_classifier.model.learner import load_model
    from bear_classifier.page.widget import SHRINK_SIDE

    torch.set_num_threads(1)  # as a kernel runs: one visitor, one photo, one thread (ONNX Runtime: Classifier.load)
    photos, big = sample_photos(args.n), [phone_photo()]
    reference = load_learner(REFERENCE, cpu=True)
    app, learn = Classifier.load(), load_model()
    pixels = [app.pixels(open_image(p)) for p in photos]
    _, _, mean, std = serving_transforms(learn)
    # The same network as TorchScript, the way the page served it before ONNX Runtime (export.pt).
    with torch.no_grad():
        script = torch.jit.freeze(torch.jit.trace(Serving(learn.model.eval(), mean, std).eval(),
                                                  torch.from_numpy(pixels[0])))
    tensors = [torch.from_numpy(x) for x in pixels]

    def onnx_floor(x):
        return app.session.run(None, {"pixels": x})

    def script_floor(x):
        with torch.inference_mode():
            return script(x)

    def ref_predict(b):
        return reference.predict(PILImage.create(b))

    def app_predict(b):
        return app.predict(open_image(b, min_side=SHRINK_SIDE))

    with reference.no_bar():  # keep fastai's per-call progress bar out of the table
        small = timed({"ref": (ref_predict, photos), "app": (app_predict, photos), "onnx": (onnx_floor, pixels),
                       "script": (script_floor, tensors)}, photos, args.repeat)
        large = timed({"ref": (ref_predict, big), "app": (app_predict, big)}, big, args.repeat * 3)
    f = statistics.median(small["script"])
    source = "real photos" if BEARS.is_dir() else "generated photos"
    print(f"{len(photos)} {source} x {args.repeat}, one thread; milliseconds")
    print(f"{'path':<46} {'median':>8} {'min':>8} {'max':>8}   vs TorchScript")
    print(row("TorchScript forward on prepared pixels (before)", small["script"], f))
    print(row("ONNX Runtime forward on prepared pixels (now)", small["onnx"], f))
    print(row("app: bytes → Classifier.predict (+ heatmap)", small["app"], f))
    print(row("reference: bytes → learn.predict (resnet18)", small["ref"], f))
    print(row("app, 12 MP phone photo", large["app"], f))
    print(row("reference, 12 MP phone photo", large["ref"], f))
    med = {k: statistics.median(v) for k, v in {**small, **{"ref_big": large["ref"], "app_big": large["app"]}}.items()}
    print(f"\nONNX / TorchScript forward = {med['onnx'] / med['script']:.2f}; app / ONNX forward = {med['app'] / med['onnx']:.2f}; "
          f"reference / app = {med['ref'] / med['app']:.2f}; 12 MP: reference / app = {med['ref_big'] / med['app_big']:.2f}")


if __name__ == "__main__":
    main()
