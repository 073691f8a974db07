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
    each whole and as a face crop (the selfie framing).
Usage: python bench/people.py   (prints the folder)
"""
from __future__ import annotations

from pathlib import Path

import sys

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
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
    return out


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


if __name__ == "__main__":
    print(f"{len(people_files())} photos of people in {PEOPLE}")
