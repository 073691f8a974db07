"""The person sentence measured: what the face detector (bear_classifier/inference/people.py) says, side by side with it off.

  people     data/people/SOURCES.csv's photos (python data/people/fetch.py), by source group: answered as any bear,
             and given "That looks like a person" (it needs a "not a bear" answer and a large face); every kind of
             photo is also answered without the served face rule (a corner view showing the person counts
             only at the gate's bound: docs/model.md), to show what the rule changes
  bears      the pool's bears by folder, the hand-checked ones (data/valid.csv) apart, and the teddy photos with a
             large face in them (children holding teddies, babies in teddy suits): right as served, and right if a
             large face also overrode a bear answer, two ways: any large face ("face"), or a large face where the
             answer's own class activation map peaks ("face + map")
  everyday   the not-bear photos: "not a bear" as served and with each override, and how many get the person
             sentence
  time       milliseconds per photo, bytes → answer, detector off and on, on people, bears and everyday photos
  memory     a fresh process's RSS, private memory and peak after loading and 50 answers, detector off and on
Usage: python -m bench.people_answer [--data ../shared/data] [--photos data/people/photos] [--every 1]
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench import ROOT

KINDS = ("grizzly", "black", "teddy")


def photo_list(data: Path, people: Path, every: int) -> list[dict]:
    """Every photo with its kind (person, a bear folder, not_bear) and group (source repository, or subject)."""
    checked = {r["file"] for r in csv.DictReader(open(ROOT / "data" / "valid.csv"))}
    rows = [dict(kind="person", group=r["group"], path=people / r["file"])
            for r in csv.DictReader(open(ROOT / "data" / "people" / "SOURCES.csv")) if (people / r["file"]).exists()]
    for kind in KINDS:
        rows += [dict(kind=kind, group="hand-checked" if f"{kind}/{p.name}" in checked else "pool", path=p)
                 for p in sorted((data / "bears" / kind).glob("*.jpg"))]
    rows += [dict(kind="not_bear", group=p.name.rsplit("_", 1)[0], path=p) for p in sorted((data / "not_bear").glob("*.jpg"))]
    return rows[::every]


def answer(clf, detector, row: dict) -> dict:
    """The served answer, the detector's faces, and both overrides' answers, for one photo."""
    from bear_classifier.inference.images import open_image

    img = open_image(row["path"].read_bytes())
    pred = clf.predict(img)  # the served path: the detector asked on "not a bear" and corner-only answers
    raw = clf.vocab[int(clf.probabilities(img).argmax())]  # the same network without the face rule
    f = detector.main_face(img)
    large = f is not None
    peak_in_face = False
    if large and pred.in_set:
        h, w = pred.heatmap.shape
        y, x = np.unravel_index(int(pred.heatmap.argmax()), pred.heatmap.shape)
        peak_in_face = f.x * w <= x + 0.5 <= (f.x + f.w) * w and f.y * h <= y + 0.5 <= (f.y + f.h) * h
    none = clf.classes.none_label
    return dict(label=pred.label, raw=raw, person=pred.person, large=large,
                face=none if large else pred.label, face_map=none if peak_in_face else pred.label)


def share(n: int, of: int) -> str:
    return f"{n}/{of} ({100 * n / of:.2f}%)" if of else "0/0"


def accuracy(rows: list[dict], answers: list[dict]) -> None:
    print("\n## answers: served (the detector asked on \"not a bear\" and corner-only answers) | without the face rule | "
          "with a face override | with a face + map override")
    people = defaultdict(list)
    for r, a in zip(rows, answers):
        if r["kind"] == "person":
            people[r["group"]].append(a)
    print("people by source group | photos | served: any bear | person sentence | without the face rule: any bear | "
          "face override: any bear | face + map: any bear")
    for group in sorted(people, key=str.lower) + ["all"]:
        a = [x for g in people for x in people[g]] if group == "all" else people[group]
        bear = lambda key: sum(x[key] != "not_bear" for x in a)
        print(f"{group} | {len(a)} | {share(bear('label'), len(a))} | {share(sum(x['person'] for x in a), len(a))} | "
              f"{share(bear('raw'), len(a))} | {share(bear('face'), len(a))} | {share(bear('face_map'), len(a))}")
    print("\nbears | photos | right as served | right without the face rule | right, face override | "
          "right, face + map override")
    parts = {f"{k}, hand-checked": lambda r, k=k: r["kind"] == k and r["group"] == "hand-checked" for k in KINDS}
    parts |= {f"{k}, all": lambda r, k=k: r["kind"] == k for k in KINDS}
    parts["teddy photos with a large face"] = lambda r: r["kind"] == "teddy"
    for name, test in parts.items():
        a = [(r, x) for r, x in zip(rows, answers) if test(r) and (x["large"] or "large face" not in name)]
        right = lambda key: sum(x[key] == r["kind"] for r, x in a)
        print(f"{name} | {len(a)} | {share(right('label'), len(a))} | {share(right('raw'), len(a))} | "
              f"{share(right('face'), len(a))} | {share(right('face_map'), len(a))}")
    changed = [(r, x) for r, x in zip(rows, answers) if r["kind"] in KINDS and x["face"] != x["label"]]
    print("bears a face override changes: " + ", ".join(f"{r['kind']}/{r['path'].name}" + (" (+map)" if
          x["face_map"] != x["label"] else "") for r, x in changed))
    a = [x for r, x in zip(rows, answers) if r["kind"] == "not_bear"]
    print(f"\neveryday photos | {len(a)} | \"not a bear\" as served {share(sum(x['label'] == 'not_bear' for x in a), len(a))}"
          f" | without the face rule {share(sum(x['raw'] == 'not_bear' for x in a), len(a))}"
          f" | face override {share(sum(x['face'] == 'not_bear' for x in a), len(a))} | face + map "
          f"{share(sum(x['face_map'] == 'not_bear' for x in a), len(a))} | person sentence "
          f"{share(sum(x['person'] for x in a), len(a))}")
    print("photos the face rule changes: " + ", ".join(f"{r['kind']}/{r['path'].name} ({x['raw']} → {x['label']})"
                                                       for r, x in zip(rows, answers) if x["raw"] != x["label"]))
    print("everyday photos given the person sentence: " + ", ".join(
        r["path"].name for r, x in zip(rows, answers) if r["kind"] == "not_bear" and x["person"]))


def timing(rows: list[dict], n: int) -> None:
    """Milliseconds from bytes to answer, detector off and on, interleaved photo by photo."""
    from bear_classifier.inference.images import open_image
    from bear_classifier.inference.predict import Classifier

    off, on = Classifier.load(people=False), Classifier.load()
    print("\n## time: bytes → open_image → predict, ms (median / 90th percentile / max)")
    print("photos | answers \"not a bear\" | detector off | detector on | on / off")
    for kind in ("person", "grizzly", "black", "teddy", "not_bear"):
        sample = [r for r in rows if r["kind"] == kind]
        sample = [r["path"].read_bytes() for r in sample[:: max(1, len(sample) // n)][:n]]
        ms = {"off": [], "on": []}
        nones = 0
        for clf in (off, on):
            clf.predict(open_image(sample[0]))  # warm-up
        for data in sample:
            for name, clf in (("off", off), ("on", on)):
                start = time.perf_counter()
                pred = clf.predict(open_image(data))
                ms[name].append((time.perf_counter() - start) * 1000)
            nones += not pred.in_set
        f = lambda v: f"{statistics.median(v):.1f} / {np.percentile(v, 90):.1f} / {max(v):.1f}"
        print(f"{kind} ({len(sample)}) | {nones} | {f(ms['off'])} | {f(ms['on'])} | "
              f"{statistics.median(ms['on']) / statistics.median(ms['off']):.2f}")


MEMORY = """
import json, sys
from pathlib import Path
def mib():
    s = dict(l.split(":", 1) for l in Path("/proc/self/status").read_text().splitlines())
    r = dict(l.split(":", 1) for l in Path("/proc/self/smaps_rollup").read_text().splitlines()[1:])
    kb = lambda d, k: int(d[k].split()[0]) / 1024
    return [round(kb(s, "VmRSS")), round(kb(r, "Private_Clean") + kb(r, "Private_Dirty")), round(kb(s, "VmHWM"))]
from bear_classifier.inference.images import open_image
from bear_classifier.inference.predict import Classifier
clf = Classifier.load(people=sys.argv[1] == "on")
out = [mib()]
for p in sys.argv[2:]:
    clf.predict(open_image(Path(p).read_bytes()))
out.append(mib())
print(json.dumps(out))
"""


def memory(rows: list[dict]) -> None:
    """A fresh process each: RSS / private / peak (MiB) after load and after 50 answers (people and everyday)."""
    photos = [str(r["path"]) for r in rows if r["kind"] in ("person", "not_bear")][::37][:50]
    print("\n## memory of a fresh process, MiB: RSS / private / peak (VmHWM)")
    print("detector | after load | after 50 answers (people and everyday photos)")
    for mode in ("off", "on"):
        out = subprocess.run([sys.executable, "-c", MEMORY, mode, *photos], capture_output=True, text=True, cwd=ROOT,
                             check=True).stdout
        load, after = json.loads(out)
        print(f"{mode} | {' / '.join(map(str, load))} | {' / '.join(map(str, after))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--photos", type=Path, default=ROOT / "data" / "people" / "photos")
    parser.add_argument("--every", type=int, default=1, help="every n-th photo only (a quicker, rougher run)")
    parser.add_argument("--timed", type=int, default=40, help="photos of each kind timed")
    parser.add_argument("--skip", nargs="*", default=[], choices=["answers", "time", "memory"])
    args = parser.parse_args()
    from bear_classifier.inference.people import PersonDetector
    from bear_classifier.inference.predict import Classifier

    rows = photo_list(args.data, args.photos, args.every)
    print(f"{sum(r['kind'] == 'person' for r in rows)} photos of people, "
          f"{sum(r['kind'] in KINDS for r in rows)} bears, {sum(r['kind'] == 'not_bear' for r in rows)} everyday")
    if "answers" not in args.skip:
        clf, detector = Classifier.load(), PersonDetector()
        accuracy(rows, [answer(clf, detector, r) for r in rows])
    if "time" not in args.skip:
        timing(rows, args.timed)
    if "memory" not in args.skip:
        memory(rows)


if __name__ == "__main__":
    main()
