"""Verify and de-duplicate crafted folders; label overrides; the seeded split; cleaning CSVs."""
from pathlib import Path

import pytest
from PIL import Image

from bear_classifier.training.clean import apply_review, write_review
from bear_classifier.training.data import image_files, label_items, read_labels, split_items, verify_photos
from corpus import encode, photo


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_verify_drops_broken_tiny_and_duplicates_and_says_why(tmp_path):
    good = encode(photo((200, 150), seed=1), "JPEG", quality=95)
    files = {
        "a_good.jpg": good,
        "b_exact_copy.jpg": good,
        "c_resized_copy.jpg": encode(photo((200, 150), seed=1).resize((180, 135)), "JPEG", quality=80),
        "d_other.jpg": encode(photo((200, 150), seed=7), "JPEG"),
        "e_truncated.jpg": good[: len(good) // 3],
        "f_text.jpg": b"hello",
        "g_tiny.png": encode(photo((20, 20)), "PNG"),
        "h_cmyk.jpg": encode(photo((200, 150), seed=3).convert("CMYK"), "JPEG"),
    }
    for name, data in files.items():
        write(tmp_path / "grizzly" / name, data)
    report = verify_photos(image_files(tmp_path))
    kept = {p.name for p in report.kept}
    reasons = {p.name: r for p, r in report.dropped.items()}
    assert kept == {"a_good.jpg", "d_other.jpg", "h_cmyk.jpg"}
    assert reasons["b_exact_copy.jpg"].startswith("exact duplicate")
    assert reasons["c_resized_copy.jpg"].startswith("near duplicate")
    assert reasons["e_truncated.jpg"].startswith("unreadable")
    assert reasons["f_text.jpg"].startswith("unreadable")
    assert reasons["g_tiny.png"].startswith("tiny")
    assert "dropped 5" in report.summary()


def test_verify_fix_deletes_drops_and_converts_odd_modes(tmp_path):
    write(tmp_path / "x" / "cmyk.jpg", encode(photo((100, 100), seed=3).convert("CMYK"), "JPEG"))
    write(tmp_path / "x" / "pal.png", encode(photo((100, 100), seed=4).convert("P"), "PNG"))
    write(tmp_path / "x" / "bad.jpg", b"nope")
    report = verify_photos(image_files(tmp_path), fix=True)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == ["cmyk.jpg", "pal.jpg"]
    assert all(Image.open(p).mode == "RGB" for p in report.kept)


def test_labels_overrides_and_split(tmp_path):
    files = [write(tmp_path / c / f"{i}.jpg", b"") for c in ["black", "teddy"] for i in range(50)]
    csv = tmp_path / "cleaning.csv"
    csv.write_text("file,label\nblack/0.jpg,\nblack/1.jpg,teddy\n")
    items = label_items(tmp_path, files, read_labels(csv))
    assert len(items) == 99 and (tmp_path / "black/1.jpg", "teddy") in items
    train, valid, how = split_items(items, tmp_path, valid_pct=0.2, seed=1)
    assert sorted(train + valid) == list(range(99)) and len(valid) == 20 and how.startswith("20% of each class")
    assert sum(items[i][1] == "black" for i in valid) == 10  # stratified: 48 black, 51 teddy → 10 and 10
    assert (train, valid) == split_items(items, tmp_path, valid_pct=0.2, seed=1)[:2]  # seeded: same split every run
    assert valid != split_items(items, tmp_path, valid_pct=0.2, seed=2)[1]
    _, v2, how = split_items(items, tmp_path, valid_files={"teddy/3.jpg", "teddy/4.jpg"})
    assert [items[i][0].name for i in v2] == ["3.jpg", "4.jpg"] and "hand-checked" in how


@pytest.mark.parametrize("by_source", [False, True])
def test_cleaning_moves_no_photo_across_the_split_but_at_its_edge(tmp_path, by_source):
    # So accuracy before and after cleaning is measured on the same photos (a random draw redrew about 20 of them).
    files = [write(tmp_path / c / f"{i}.jpg", b"") for c in ["black", "teddy"] for i in range(60)]
    sources = {f.relative_to(tmp_path).as_posix(): f"user{i // 4}/repo" for i, f in enumerate(files)}
    sources = sources if by_source else None

    def validation(cleaning: str) -> set[str]:
        (tmp_path / "cleaning.csv").write_text("file,label\n" + cleaning)
        items = label_items(tmp_path, files, read_labels(tmp_path / "cleaning.csv"))
        _, valid, _ = split_items(items, tmp_path, sources=sources)
        return {items[i][0].relative_to(tmp_path).as_posix() for i in valid}

    before = validation("")
    cleanings = [{"black/3.jpg": "", "teddy/7.jpg": "", "teddy/9.jpg": ""},  # three photos dropped
                 {"teddy/41.jpg": "black", "teddy/42.jpg": "black"},  # two relabelled
                 {f"black/{i}.jpg": "" for i in range(4)}]  # the whole of a source, user0, dropped
    for cleaning in cleanings:
        after, cleaned = validation("".join(f"{f},{y}\n" for f, y in cleaning.items())), set(cleaning)
        assert 22 <= len(after) <= 26
        assert len((before - cleaned) ^ (after - cleaned)) <= 4  # one photo a class, or one source, at the edge


def test_split_holds_out_whole_sources_where_they_are_known(tmp_path):
    files = [write(tmp_path / c / f"{i}.jpg", b"") for c in ["black", "teddy"] for i in range(50)]
    items = label_items(tmp_path, files)
    sources = {p.relative_to(tmp_path).as_posix(): f"user{i % 10}/repo" for i, (p, _) in enumerate(items)}
    train, valid, how = split_items(items, tmp_path, sources=sources, seed=3)
    source = [sources[p.relative_to(tmp_path).as_posix()] for p, _ in items]
    assert {source[i] for i in train}.isdisjoint({source[i] for i in valid}) and len(valid) == 20
    assert how.startswith("whole sources held out")


def test_a_source_of_most_of_the_photos_stays_in_training(tmp_path):
    files = [write(tmp_path / c / f"{i}.jpg", b"") for c in ["black", "teddy"] for i in range(50)]
    items = label_items(tmp_path, files)
    sources = {f.relative_to(tmp_path).as_posix(): "big/repo" if i % 5 else f"user{i}/repo" for i, f in enumerate(files)}
    for seed in range(20):
        train, valid, how = split_items(items, tmp_path, sources=sources, seed=seed)
        held = {sources[items[i][0].relative_to(tmp_path).as_posix()] for i in valid}
        assert "big/repo" not in held and 20 <= len(valid) <= 30, (seed, len(valid))
        assert how.startswith(f"whole sources held out ({len(valid)} of 100 photos")


def test_review_sheet_round_trip(tmp_path):
    write(tmp_path / "data" / "black" / "1.jpg", encode(photo(), "JPEG"))
    rows = [dict(file="black/1.jpg", label="black", predicted="grizzly", probability=0.97, loss=3.5),
            dict(file="black/2.jpg", label="black", predicted="teddy", probability=0.9, loss=2.0),
            dict(file="black/3.jpg", label="black", predicted="black", probability=0.6, loss=0.5)]
    csv_path, html_path = write_review(rows, tmp_path / "data", tmp_path / "review", "Mark each.")
    assert '<img src="../data/black/1.jpg"' in html_path.read_text() and b"\r" not in csv_path.read_bytes()
    marked = csv_path.read_text().splitlines()
    marked[1] += "grizzly"
    marked[2] += "drop"
    csv_path.write_text("\n".join(marked) + "\n")
    labels = tmp_path / "cleaning.csv"
    changes = apply_review(csv_path, labels, ["black", "grizzly", "teddy"])
    assert changes == {"black/1.jpg": "grizzly", "black/2.jpg": ""}
    assert read_labels(labels) == changes


def test_grouped_folds_never_put_a_source_on_both_sides():
    import random

    from bear_classifier.training.data import grouped_folds

    rng = random.Random(0)
    sources = [f"user{rng.randrange(18)}/bears" for _ in range(500)]  # a generated SOURCES table: 18 repositories
    folds = grouped_folds(sources, n_folds=5)
    assert len(folds) == 5
    seen_valid = []
    for train, valid in folds:
        assert not {sources[i] for i in train} & {sources[i] for i in valid}
        assert sorted(train + valid) == list(range(500))
        seen_valid += valid
    assert sorted(seen_valid) == list(range(500))  # every photo is held out exactly once


def test_read_sources_and_not_bear_split_by_subject(tmp_path):
    from bear_classifier.training.data import negatives_split, read_sources, subject

    (tmp_path / "SOURCES.csv").write_text("file,label,source_repo\nblack/a.jpg,black,u1/bears\ngrizzly/b.jpg,grizzly,u2/x\n")
    assert read_sources(tmp_path) == {"black/a.jpg": "u1/bears", "grizzly/b.jpg": "u2/x"}
    files = [Path(f"{s}_{i:04x}.jpg") for s in ["cat", "tabby_cat", "sports_car", "pine_forest", "espresso", "kite"]
             for i in range(10)]
    train, held_out = negatives_split(files, max_train=15)
    assert len(train) == 15 and held_out
    assert not {subject(f) for f in train} & {subject(f) for f in held_out}
    # Removing photos never moves a subject across: the split is a property of the subject's name.
    _, held_again = negatives_split(files[::3])
    assert {subject(f) for f in held_again} <= {subject(f) for f in held_out}
