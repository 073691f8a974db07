"""How often photos of people get a bear answer: the people photos of data/people/SOURCES.csv, per source repository.

The training pool has no photos of people, so neither the negatives nor the measured "not a bear" include them;
these photos come from other public repositories (data/people/fetch.py brings them back; they are never committed).
For each source group (the repository), the served model (export.onnx, as the page serves it, or --model) says how
many photos it answers as one of the classes (grizzly, black, teddy), and the photos nearest to a bear answer are
listed. With --untouched, the untouched ImageNet network is asked too, by its own rule (whole photo: 0.05 on the
four wild-bear rows, 0.02 on teddy, the reference of docs/model.md) and through the shipped gate's settings (five
views, thresholds, corners and sharpness from the model card). With --filter, every photo is first put through a
phone's colour filter (warm, a stronger warm, sepia): portraits in warm light, knitwear and curls are where a teddy
answer came from (docs/model.md, "Photos of people"). With --closeups, each photo's faces are asked instead, cut
out as close-ups at four widths; with --offcentre, each photo with a large face, cut so that the face is off-centre.
Usage: python data/people/fetch.py   (once; --mirror DIR offline)
       python -m bench.people_sources [--photos DIR] [--model export.onnx] [--untouched] [--groups OWNER/NAME ...]
                                      [--filter plain|warm|warm+|sepia] [--closeups | --offcentre]
"""
from __future__ import annotations

import argparse
import csv
from collections import defaultdict
from pathlib import Path

from bench import ROOT

PEOPLE = ROOT / "data" / "people"
WILD, TEDDY = [294, 295, 296, 297], [850]  # ImageNet rows: brown, American black, ice and sloth bear; teddy
# A phone's colour filters: each channel scaled (red, blue), or sepia (Pillow's colorize of the gray photo).
FILTERS = {"plain": None, "warm": (1.15, 0.8), "warm+": (1.25, 0.65), "sepia": "sepia"}
CLOSEUP = (320, 352)  # a close-up's size: a head, a little taller than wide
WIDEN = (1.0, 1.3, 1.7, 2.3)  # a close-up's side against its face's
FRAME, OFFCENTRE = 0.8, 0.3  # --offcentre: the photo cut to 80% of its width, its face at 0.3 (and 0.7) of the cut


def look(row: dict, name: str = "plain"):
    """The row's photo (decoded whole, where the page reads it at a 375 px short side), cut to its close-up if it is
    one, through the filter `name` (FILTERS)."""
    import numpy as np
    from PIL import Image, ImageOps

    from bear_classifier.inference.images import open_image

    img, how = open_image(row["photo"].read_bytes()), FILTERS[name]
    if "crop" in row:
        img = img.crop(row["crop"])
        img = img.resize(CLOSEUP) if row.get("closeup", True) else img
    if how == "sepia":
        return ImageOps.colorize(ImageOps.grayscale(img), (40, 20, 0), (255, 235, 200))
    if how:
        pixels = np.asarray(img.convert("RGB"), dtype=np.float32) * np.array([how[0], 1.0, how[1]], dtype=np.float32)
        return Image.fromarray(pixels.clip(0, 255).astype(np.uint8))
    return img


def closeups(rows: list[dict]) -> list[dict]:
    """Rows for close-ups of each row's faces (up to 4; OpenCV's frontal Haar cascade at its usual 4 neighbours, so
    that small and turned faces count too), each widened by WIDEN around the face, "crop" the box."""
    import cv2
    import numpy as np

    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.people import CASCADE

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    out = []
    for r in rows:
        gray = np.asarray(open_image(r["photo"].read_bytes()).convert("L"))
        faces = cascade.detectMultiScale(cv2.equalizeHist(gray), 1.1, 4, minSize=(24, 24))
        for k, (x, y, w, h) in enumerate(list(faces)[:4]):
            for s in WIDEN:
                half, cx, cy = w * s / 2, x + w / 2, y + h / 2
                box = (max(0, int(cx - half)), max(0, int(cy - half * 1.1)),  # within the photo: no black edges
                       min(gray.shape[1], int(cx + half)), min(gray.shape[0], int(cy + half * 1.1)))
                out.append(dict(r, crop=box, file=f"{r['file']} (face {k + 1}, ×{s})"))
    return out


def framings(rows: list[dict]) -> list[dict]:
    """Rows for each row's photo framed off-centre: cut to FRAME of its width so that its largest face (the served
    detector's) lies as near OFFCENTRE of the cut, and its mirror place, as the photo allows; photos without a large
    face are left out (the face rule is about them)."""
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.people import PersonDetector

    detector, out = PersonDetector(), []
    for r in rows:
        img = open_image(r["photo"].read_bytes())
        face = detector.main_face(img)
        if face is None:
            continue
        width, cx = int(img.width * FRAME), (face.x + face.w / 2) * img.width
        for at in (OFFCENTRE, 1 - OFFCENTRE):
            left = min(max(0, int(cx - at * width)), img.width - width)
            out.append(dict(r, crop=(left, 0, left + width, img.height), closeup=False,
                            file=f"{r['file']} (face at {(cx - left) / width:.2f} of {FRAME:.0%} of the width)"))
    return out


def photos(folder: Path, sources: Path, groups: list[str] | None = None) -> list[dict]:
    """SOURCES.csv rows whose photo is in `folder` (those of `groups` only, where given), with its path."""
    with open(sources, newline="") as f:
        rows = [r for r in csv.DictReader(f) if not groups or r["group"] in groups]
    return [dict(r, photo=folder / r["file"]) for r in rows if (folder / r["file"]).exists()]


def served_answers(rows: list[dict], model: Path | None, filter_name: str = "plain") -> list[dict]:
    """{label, probability, p_in_set} of the served model for each row's photo."""
    from bear_classifier.inference.predict import Classifier

    clf = Classifier.load(model)
    out = []
    for r in rows:
        pred = clf.predict(look(r, filter_name))
        out.append(dict(label=pred.label, probability=pred.probability, p_in_set=1 - pred.probs[pred.none_label],
                        in_set=pred.in_set))
    return out


def untouched_answers(rows: list[dict], model: Path | None, filter_name: str = "plain") -> list[dict]:
    """The untouched ImageNet network on each photo: its own rule (whole photo, 0.05 / 0.02) and the shipped gate's
    (five views), with the top ImageNet class."""
    import numpy as np
    import torch
    from timm.data import ImageNetInfo

    from bear_classifier.model.backbone import OFFLINE_ARCH, create_imagenet_model, normalization, split_imagenet_model
    from bear_classifier.model.classifier import ImageNetGate, pooled_views
    from bear_classifier.inference.predict import Classifier, read_card, served_model_path

    clf = Classifier.load(model)  # its input size and resampling: the same pixels the served model reads
    card = read_card(Path(model or served_model_path())).get("gate", {})
    trunk, tail, head = split_imagenet_model(create_imagenet_model(OFFLINE_ARCH).eval())
    gate = ImageNetGate(head, [(g["rows"], g["threshold"]) for g in card["groups"]], card["sharpness"],
                        [g.get("corners", 1.0) for g in card["groups"]])
    mean, std = (torch.tensor(s).view(1, 3, 1, 1) for s in normalization(OFFLINE_ARCH))
    names = ImageNetInfo().label_descriptions()
    out = []
    with torch.inference_mode():
        for i in range(0, len(rows), 32):
            pix = np.concatenate([clf.pixels(look(r, filter_name)) for r in rows[i:i + 32]])
            x = (torch.from_numpy(pix).permute(0, 3, 1, 2).float() / 255 - mean) / std
            views = pooled_views(tail(trunk(x)))
            probs = head(views[:, 0]).softmax(-1)
            own = (probs[:, WILD].sum(-1) >= 0.05) | (probs[:, TEDDY].sum(-1) >= 0.02)
            shipped = gate(views) >= 0
            for p, a, b in zip(probs, own.tolist(), shipped.tolist()):
                top = int(p.argmax())
                out.append(dict(own_rule=a, shipped_gate=b, top=names[top], top_p=float(p[top]),
                                wild=float(p[WILD].sum()), teddy=float(p[TEDDY].sum())))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, default=PEOPLE / "photos")
    parser.add_argument("--sources", type=Path, default=PEOPLE / "SOURCES.csv")
    parser.add_argument("--model", type=Path, help="the served model (default: BEAR_MODEL, else export.onnx)")
    parser.add_argument("--groups", nargs="+", help="only these source groups (OWNER/NAME)")
    parser.add_argument("--untouched", action="store_true", help="also the untouched ImageNet network")
    parser.add_argument("--filter", choices=FILTERS, default="plain", help="a phone's colour filter on every photo")
    parser.add_argument("--closeups", action="store_true", help="close-ups of each photo's faces instead")
    parser.add_argument("--offcentre", action="store_true", help="photos with a large face, framed with it off-centre")
    parser.add_argument("--worst", type=int, default=10, help="list this many photos nearest to a bear answer")
    args = parser.parse_args(argv)

    rows = photos(args.photos, args.sources, args.groups)
    if not rows:
        raise SystemExit(f"no photos of {args.sources} in {args.photos}: run python data/people/fetch.py first")
    rows = closeups(rows) if args.closeups else framings(rows) if args.offcentre else rows
    served = served_answers(rows, args.model, args.filter)
    plain = untouched_answers(rows, args.model, args.filter) if args.untouched else None
    by_group = defaultdict(list)
    for i, r in enumerate(rows):
        by_group[r["group"]].append(i)
    head = "group | photos | served: a bear | grizzly / black / teddy | highest p(a bear)"
    head += " | untouched, own rule: a bear | untouched, shipped gate: a bear" if plain else ""
    what = "close-ups of faces" if args.closeups else "off-centre framings" if args.offcentre else "photos of people"
    print(f"{len(rows)} {what} in {args.photos} ({args.filter}), {len(by_group)} source groups\n{head}")
    for group in sorted(by_group, key=str.lower) + ["all"]:
        idx = range(len(rows)) if group == "all" else by_group[group]
        bears = [i for i in idx if served[i]["in_set"]]
        kinds = "/".join(str(sum(served[i]["label"] == k for i in bears)) for k in ("grizzly", "black", "teddy"))
        line = f"{group} | {len(idx)} | {len(bears)} | {kinds} | {max(served[i]['p_in_set'] for i in idx):.4f}"
        if plain:
            line += (f" | {sum(plain[i]['own_rule'] for i in idx)} | {sum(plain[i]['shipped_gate'] for i in idx)}")
        print(line)
    print(f"\nthe {args.worst} photos nearest to a bear answer (served model):")
    for i in sorted(range(len(rows)), key=lambda i: -served[i]["p_in_set"])[:args.worst]:
        s = served[i]
        extra = (f"; untouched top: {plain[i]['top']} {plain[i]['top_p']:.2f}, bear rows {plain[i]['wild']:.3f}, "
                 f"teddy {plain[i]['teddy']:.3f}") if plain else ""
        print(f"  {rows[i]['file']} ({rows[i]['subject']}): {s['label']} {s['probability']:.4f}, "
              f"p(a bear) {s['p_in_set']:.4f}{extra}")
    if plain:
        flagged = [i for i in range(len(rows)) if plain[i]["own_rule"] or plain[i]["shipped_gate"]]
        print(f"\nphotos the untouched network calls a bear ({len(flagged)}):")
        for i in sorted(flagged, key=lambda i: -max(plain[i]["wild"], plain[i]["teddy"])):
            p = plain[i]
            print(f"  {rows[i]['file']} ({rows[i]['subject']}): own rule {p['own_rule']}, shipped gate "
                  f"{p['shipped_gate']}; bear rows {p['wild']:.3f}, teddy {p['teddy']:.3f}; top {p['top']} {p['top_p']:.2f}")


if __name__ == "__main__":
    main()
