"""Photos of people for measurement, from a package's own data: the pool has none, and a public page gets selfies first.

All from scikit-image (installed with the project), written as files under bench/results/people/ (gitignored,
never committed), so the model reads them through its usual file pipeline:
  - `data.astronaut()`: Eileen Collins, NASA; "no known copyright restrictions, released into the public domain";
    written whole and as a head-and-shoulders crop (the selfie framing);
  - `data.camera()`: a man with a camera; "CC0 by the photographer (Lav Varshney)"; gray, written as RGB;
  - `data.lfw_subset()`: its first 100 images, faces from Labeled Faces in the Wild (news photographs),
    25×25 gray crops; scikit-image ships them under its BSD-3 licence with no licence of their own: used
    here only to measure, never redistributed. Too small and blurred to pass for a visitor's photo (the
    network sees a nematode in all of them), so they are reported apart;
  - the test photos in the source distribution of `face_recognition` 1.3.0 on PyPI (MIT licence; fetched
    with `pip download`): Joe Biden's and Barack Obama's official portraits (works of the US federal
    government: public domain) and three more photos of Obama (no licence stated: measurement only),
    each whole and as a face crop (the selfie framing);
  - the demo photos of `@vladmandic/face-api` 1.7.15 on npm (MIT licence; its README: "Photos shown below are
    taken by me"; fetched with `npm pack`): six group photos of three to six young women, indoors, each whole and
    cut into three head-and-shoulders strips (the top 60% of each third): the kind of photo the false teddies
    found elsewhere were.
Usage: python -m bench.people   (writes the photos, then says what the served model calls each group of them)
"""
from __future__ import annotations

from pathlib import Path

import sys

from PIL import Image

from bench import ROOT

PEOPLE = ROOT / "bench" / "results" / "people"


def people_images() -> dict[str, Image.Image]:
    """{name: RGB image} of every photo of a person listed above."""
    from skimage import data

    astronaut = Image.fromarray(data.astronaut())
    out = {"astronaut": astronaut, "astronaut_face": astronaut.crop((140, 0, 340, 230)),
           "camera": Image.fromarray(data.camera()).convert("RGB")}
    for i, face in enumerate(data.lfw_subset()[:100]):  # the first 100 are faces, the rest backgrounds
        out[f"lfw_face_{i:03d}"] = Image.fromarray(face).convert("RGB")
    for name, img in face_recognition_photos().items():
        w, h = img.size
        out[name], out[f"{name}_face"] = img, img.crop((w // 6, 0, w - w // 6, h * 3 // 4))
    for name, img in face_api_photos().items():
        w, h = img.size
        out[name] = img
        for k in range(3):
            out[f"{name}_strip{k}"] = img.crop((k * w // 3, 0, (k + 1) * w // 3, h * 3 // 5))
    return out


def face_api_photos() -> dict[str, Image.Image]:
    """The six demo photos of @vladmandic/face-api 1.7.15, from its npm package (downloaded once)."""
    import subprocess
    import tarfile

    cache = PEOPLE.parent / "packages"
    tgz = cache / "vladmandic-face-api-1.7.15.tgz"
    if not tgz.exists():
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "pack", "@vladmandic/face-api@1.7.15", "--silent", "--pack-destination", str(cache)],
                       check=True, stdout=subprocess.DEVNULL)
    with tarfile.open(tgz) as tar:
        return {f"faceapi_{i}": Image.open(tar.extractfile(f"package/demo/sample{i}.jpg")).convert("RGB")
                for i in range(1, 7)}


def face_recognition_photos() -> dict[str, Image.Image]:
    """The photos of people among face_recognition 1.3.0's test images, from its sdist (downloaded once)."""
    import subprocess
    import tarfile

    cache = PEOPLE.parent / "packages"
    sdist = cache / "face_recognition-1.3.0.tar.gz"
    if not sdist.exists():
        subprocess.run([sys.executable, "-m", "pip", "download", "face_recognition==1.3.0", "--no-deps",
                        "--no-binary", ":all:", "-d", str(cache), "-q"], check=True)
    out = {}
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = Path(member.name)
            if name.parent.name == "test_images" and name.stem.startswith(("obama", "biden")):
                out[name.stem] = Image.open(tar.extractfile(member)).convert("RGB")
    return out


def people_files(folder: Path = PEOPLE) -> list[Path]:
    """The photos as PNG files in `folder` (written once), sorted."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, img in people_images().items():
        if not (folder / f"{name}.png").exists():
            img.save(folder / f"{name}.png")
    return sorted(folder.glob("*.png"))


def source(path: Path) -> str:
    """Which package a photo of `people_files` comes from, by its name."""
    for prefix, name in (("lfw_", "scikit-image LFW (25 px gray)"), ("faceapi_", "@vladmandic/face-api"),
                         ("obama", "face_recognition"), ("biden", "face_recognition")):
        if path.name.startswith(prefix):
            return name
    return "scikit-image"


def main() -> None:
    """What the served model (export.onnx, as the page serves it) calls each photo of a person."""
    from collections import defaultdict

    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier

    files = people_files()
    print(f"{len(files)} photos of people in {PEOPLE}")
    classifier, called = Classifier.load(), defaultdict(list)
    for f in files:
        called[source(f)].append((f.name, classifier.predict(open_image(f.read_bytes()))))
    for name, answers in called.items():
        in_set = [(n, p) for n, p in answers if p.in_set]
        closest = max(answers, key=lambda a: 1 - a[1].probs[a[1].none_label])
        print(f"{name}: {len(in_set)} of {len(answers)} called one of the classes; the closest, {closest[0]}, at "
              f"p(one of them) = {1 - closest[1].probs[closest[1].none_label]:.4f}"
              + "".join(f"\n  {n}: {p}" for n, p in in_set))


if __name__ == "__main__":
    main()
