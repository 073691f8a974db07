"""Verify, de-duplicate and load the image folders: `root/<label>/*.jpg` → fastai DataLoaders."""
from __future__ import annotations

import csv
import hashlib
import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from ..inference.images import ImageError, open_image

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".avif"}
MIN_SIDE = 64  # thumbnails and icons teach nothing at 224 px
SIZE = 224


@dataclass
class Report:
    """What `verify_photos` kept and what it dropped, with the reason for each drop."""

    kept: list[Path] = field(default_factory=list)
    dropped: dict[Path, str] = field(default_factory=dict)

    def summary(self) -> str:
        reasons = Counter(r.split(":")[0] for r in self.dropped.values())
        lines = [f"kept {len(self.kept)}, dropped {len(self.dropped)}"]
        lines += [f"  {n:5d}  {reason}" for reason, n in reasons.most_common()]
        return "\n".join(lines)


def image_files(root: Path) -> list[Path]:
    """Image files under root, sorted so every run sees the same order."""
    return sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in IMAGE_EXTS and p.is_file())


def verify_photos(files: list[Path], fix: bool = False, hash_distance: int = 4) -> Report:
    """Drop files that don't decode, are tiny, or duplicate an earlier file (exactly or perceptually): more than
    fastai's `verify_images`, which only finds the files that fail to open.

    With fix=True, images in an odd mode (CMYK, palette, 16-bit...) are rewritten as RGB JPEG
    next to the original name and dropped files are deleted.
    """
    report, seen_sha, seen_hash = Report(), {}, []
    for path in files:
        reason, img = _check(path, seen_sha, seen_hash, hash_distance)
        if reason:
            report.dropped[path] = reason
            if fix:
                path.unlink()
            continue
        if fix and Image.open(path).mode != "RGB":
            path.unlink()
            path = path.with_suffix(".jpg")
            img.save(path, quality=95)
        report.kept.append(path)
    return report


def _check(path: Path, seen_sha: dict, seen_hash: list, hash_distance: int) -> tuple[str | None, Image.Image | None]:
    """Why `path` should be dropped (None if kept), remembering its hashes when kept."""
    import imagehash

    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    try:
        img = open_image(data)
    except ImageError as e:
        return f"unreadable: {e}", None
    if min(img.size) < MIN_SIDE:
        return f"tiny: {img.size[0]}x{img.size[1]}", None
    if sha in seen_sha:
        return f"exact duplicate: of {seen_sha[sha].name}", None
    h = imagehash.phash(img)
    twin = next((p for p, g in seen_hash if h - g <= hash_distance), None)
    if twin is not None:
        return f"near duplicate: of {twin.name}", None
    seen_sha[sha] = path
    seen_hash.append((path, h))
    return None, img


def read_labels(csv_path: Path) -> dict[str, str]:
    """`file,label` rows (file relative to the data root) → {file: label}; label "" means drop."""
    with open(csv_path, newline="") as f:
        return {row["file"]: row["label"].strip() for row in csv.DictReader(f)}


def label_items(root: Path, files: list[Path], relabel: dict[str, str] | None = None) -> list[tuple[Path, str]]:
    """(file, label) pairs: the name of the class folder under `root` the file is in, at any depth
    (`cat/2019/x.jpg` is a cat), unless `relabel` says otherwise ("" drops the file)."""
    relabel = relabel or {}
    items = []
    for p in files:
        rel = p.relative_to(root)
        label = relabel.get(rel.as_posix(), rel.parts[0] if len(rel.parts) > 1 else p.parent.name)
        if label:
            items.append((p, label))
    return items


def read_sources(root: Path) -> dict[str, str] | None:
    """{file relative to root: the repository it came from}, from root/SOURCES.csv; None without that file."""
    if not (Path(root) / "SOURCES.csv").exists():
        return None
    with open(Path(root) / "SOURCES.csv", newline="") as f:
        return {row["file"]: row["source_repo"] for row in csv.DictReader(f)}


def subject(path: Path) -> str:
    """The subject of a negative photo, from its file name: `golden_retriever_3fa2c1.jpg` → golden_retriever."""
    return Path(path).stem.rsplit("_", 1)[0]


def grouped_folds(groups: list[str], n_folds: int = 5) -> list[tuple[list[int], list[int]]]:
    """(train, valid) index lists such that no group (a source repository, a subject) is on both sides.

    Scikit-learn's GroupKFold balances the folds' sizes; each item is in exactly one valid fold.
    """
    from sklearn.model_selection import GroupKFold

    folds = GroupKFold(n_splits=n_folds).split(groups, groups=groups)
    return [(sorted(t.tolist()), sorted(v.tolist())) for t, v in folds]


def negatives_split(files: list[Path], max_train: int = 600, seed: int = 42) -> tuple[list[Path], list[Path]]:
    """Not-bear photos split by subject: (a sample of at most `max_train` for training, all held-out ones).

    A subject's side comes from a hash of its name, so adding or removing photos never moves
    another subject across. Training sees these photos only to keep the "not a bear" gate as it
    was (train.LearningWithoutForgetting); the held-out subjects measure that gate on things it never saw.
    """
    def held_out(f: Path) -> bool:
        return hashlib.sha256(subject(f).encode()).digest()[0] % 2 == 1

    train = sorted(f for f in files if not held_out(f))
    return sorted(random.Random(seed).sample(train, min(max_train, len(train)))), sorted(f for f in files if held_out(f))


def split_items(items: list, root: Path, valid_files: set[str] | None = None, sources: dict[str, str] | None = None,
                valid_pct: float = 0.2, seed: int = 42) -> tuple[list[int], list[int], str]:
    """Train/valid indices of (path, label) `items`, and how they were split, for the model card.

    The hand-checked `valid_files` when given; else whole sources held out where `sources` ({file:
    source}, SOURCES.csv) says where photos came from, as a validation set from the training sources
    measures memory of them; else `valid_pct` of each class. Sources and photos are taken in an order
    fixed by a hash of their names, not by a random draw over the list: when cleaning drops or relabels
    photos, the others stay on their side but for one at the edge of each class (or one source), so
    accuracy before and after cleaning is measured on the same photos.
    """
    names = [Path(p).relative_to(root).as_posix() for p, _ in items]
    if valid_files is not None:
        held, how = set(valid_files), "the hand-checked photos of the validation list"
    elif sources:
        held = held_sources({n: sources.get(n, n) for n in names}, valid_pct, seed)
        how = f"whole sources held out ({len(held)} of {len(names)} photos, seed {seed}, SOURCES.csv)"
    else:
        held = held_per_class(names, [label for _, label in items], valid_pct, seed)
        how = f"{valid_pct:.0%} of each class, chosen by a hash of the file names (seed {seed})"
    valid = [i for i, n in enumerate(names) if n in held]
    return [i for i, n in enumerate(names) if n not in held], valid, how


def held_sources(source_of: dict[str, str], share: float, seed: int) -> set[str]:
    """The files of whole sources, taken in hash order until they are `share` of the files. A source that would
    take the validation photos past 1.5 times that share stays in training: a source of most of the photos would
    otherwise leave training almost none."""
    size, target, taken, held = Counter(source_of.values()), share * len(source_of), 0, set()
    for source in hash_order(size, seed):
        if taken >= target:
            break
        if taken + size[source] <= 1.5 * target:
            held.add(source)
            taken += size[source]
    return {name for name, source in source_of.items() if source in held}


def held_per_class(names: list[str], labels: list[str], share: float, seed: int) -> set[str]:
    """`share` of each class's files (rounded), the first in hash order."""
    by_class: dict[str, list[str]] = {}
    for name, label in zip(names, labels):
        by_class.setdefault(label, []).append(name)
    return {n for same in by_class.values() for n in hash_order(same, seed)[:round(share * len(same))]}


def hash_order(names: Iterable[str], seed: int) -> list[str]:
    """`names` sorted by a hash of each name and `seed`: a name's place depends on itself, not on the others."""
    return sorted(names, key=lambda n: hashlib.sha256(f"{seed}/{n}".encode()).hexdigest())


class FolderLabel:
    """get_y: the name of the file's folder, unless the cleaning CSV relabelled the file.

    Keyed by "folder/name" (the cleaning CSV's form), so no machine paths end up in export.pkl.
    """

    def __init__(self, relabel: dict[str, str] | None = None):
        self.relabel = relabel or {}

    @classmethod
    def of(cls, items: list[tuple[Path, str]]) -> "FolderLabel":
        """The labeller of (path, label) items: only labels that differ from the folder's name are stored."""
        return cls({f"{Path(p).parent.name}/{Path(p).name}": y for p, y in items if y != Path(p).parent.name})

    def __call__(self, path) -> str:
        p = Path(path)
        return self.relabel.get(f"{p.parent.name}/{p.name}", p.parent.name)


def make_dataloaders(items: list[tuple[Path, str]], splits: tuple[list[int], list[int]], vocab: list[str], bs: int = 64,
                     size: int = SIZE, num_workers: int = 0, stats: tuple = ((0.5,) * 3, (0.5,) * 3)):
    """fastai DataLoaders over (path, label) items with a fixed split.

    Items stay plain paths, as in the lesson, so fastai's ImageClassifierCleaner works on them.
    Squish, not crop: a subject at the edge of a wide photo must stay in the picture. The vocab
    carries the "none of these" label last, the answer the model's gate produces. `aug_transforms` run on every
    training batch (flips, small rotations, zoom, warp, lighting), `Normalize` with the
    backbone's own `stats` on every batch. `vocab` is `Classes.vocab`: the classes, then "none of these".
    """
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, IndexSplitter, Normalize, Resize,
                                   ResizeMethod, aug_transforms)

    dblock = DataBlock(
        blocks=(ImageBlock, CategoryBlock(vocab=list(vocab), sort=False)),
        get_y=FolderLabel.of(items),
        splitter=IndexSplitter(splits[1]),
        item_tfms=Resize(size, method=ResizeMethod.Squish),
        batch_tfms=[*aug_transforms(max_rotate=10, max_warp=0.1), Normalize.from_stats(*stats)],
    )
    return dblock.dataloaders([p for p, _ in items], bs=bs, num_workers=num_workers)
