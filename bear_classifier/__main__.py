"""Command line: python -m bear_classifier {gather,verify,review,train,cv,evaluate,predict} ..."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .data import CLASSES
from .model import COURSE_ARCHS, OFFLINE_ARCH

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "bears"
CLEANING = ROOT / "data" / "cleaning.csv"
VALID = ROOT / "data" / "valid.csv"
NEGATIVES = DATA.parent / "not_bear"
MODEL = ROOT / "export.pkl"
SERVED = ROOT / "export.onnx"  # written by `train` next to export.pkl
REPORTS = ROOT / "reports"


def cmd_gather(args) -> int:
    from .gather import gather

    for label, results in gather(args.dest, per_class=args.per_class).items():
        ok = sum(r.path is not None for r in results)
        print(f"{label}: {ok} downloaded, {len(results) - ok} skipped")
    return 0


def cmd_verify(args) -> int:
    from .data import image_files, verify_images

    report = verify_images(image_files(args.root), fix=args.fix)
    for path, reason in report.dropped.items():
        print(f"{path}: {reason}")
    print(report.summary())
    return 0


def cmd_review(args) -> int:
    from .clean import apply_review

    if args.apply:
        changes = apply_review(args.apply, args.labels, CLASSES)
        print(f"applied {len(changes)} changes to {args.labels}")
        return 0
    if args.feedback:
        from .feedback import FeedbackStore
        from .review import review_feedback

        store = FeedbackStore.from_env()
        if store is None:
            raise ValueError("Storing feedback is turned off (BEAR_FEEDBACK=off): there is nothing to review.")
        csv_path, html_path = review_feedback(store, args.out)
        print(f"open {html_path}: the photos visitors flagged, under {args.out / 'feedback'}/<label>/. "
              f"Copy the ones you agree with into the data folders, then retrain.")
        return 0
    from .review import review

    csv_path, html_path = review(args.data, args.model, args.out, top=args.top, labels_csv=args.labels)
    print(f"open {html_path}, mark {csv_path}, then: python -m bear_classifier review --apply {csv_path}")
    return 0


def cmd_train(args) -> int:
    from .evaluate import evaluate
    from .export import export
    from .train import train_model

    learn, card = train_model(args.data, args.labels, args.valid, args.negatives, arch=args.arch, epochs=args.epochs,
                              freeze_epochs=args.freeze_epochs, lr=args.lr, workers=args.workers,
                              forget_weight=args.forget_weight)
    card["valid_metrics"] = {k: v for k, v in evaluate(learn, out=args.reports).items() if k != "errors"}
    card = export(learn, args.out, card)
    print(json.dumps({k: card[k] for k in ("valid_metrics", "train_seconds", "size_mb", "sha256")}, indent=2))
    return 0


def cmd_cv(args) -> int:
    from .crossval import cross_validate

    result = cross_validate(args.data, args.labels, args.valid, args.negatives, args.reports, n_folds=args.folds,
                            arch=args.arch, epochs=args.epochs, freeze_epochs=args.freeze_epochs, lr=args.lr,
                            workers=args.workers, forget_weight=args.forget_weight)
    print(json.dumps({k: v for k, v in result.items() if k != "folds"}, indent=2))
    if args.write_card:
        write_card(MODEL, "cross_validation", result)
    return 0


def write_card(model: Path, key: str, value: dict) -> None:
    """Store `value` under `key` in the model card next to `model`; the models' sha256 are unaffected."""
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card[key] = value
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model

    result = evaluate_model(args.model, args.data, args.valid, args.negatives, args.reports)
    print(json.dumps(result, indent=2))
    if args.write_card:
        write_card(args.model, "evaluation", result)
    return 0


def cmd_predict(args) -> int:
    from .heatmap import heatmap_image, overlay
    from .images import ImageError, open_image
    from .predict import Classifier, ModelError

    try:
        clf = Classifier.load(args.model)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for photo in args.photos:
        try:
            img = open_image(Path(photo).read_bytes())
        except (ImageError, OSError) as e:
            print(f"{photo}: error: {e.strerror if isinstance(e, OSError) else e}", file=sys.stderr)
            status = 1
            continue
        pred = clf.predict(img)
        note = "" if pred.is_bear else "  (not a bear)"
        print(f"{photo}: {pred}{note}")
        if args.heatmap:
            args.heatmap.mkdir(parents=True, exist_ok=True)
            heat = heatmap_image(pred.heatmap, img.size)
            heat.save(args.heatmap / f"{Path(photo).stem}.png")
            overlay(img, heat).save(args.heatmap / f"{Path(photo).stem}_overlay.jpg", quality=90)
    return status


def add_recipe(s) -> None:
    """The training recipe's knobs, shared by `train` and `cv` so both measure the same thing."""
    s.add_argument("--arch", default=OFFLINE_ARCH, choices=[OFFLINE_ARCH, *COURSE_ARCHS])
    s.add_argument("--freeze-epochs", type=int, default=1, help="epochs of the head alone (fine_tune's first phase)")
    s.add_argument("--epochs", type=int, default=3, help="epochs with the tail unfrozen")
    s.add_argument("--lr", type=float, default=2e-3)
    s.add_argument("--forget-weight", type=float, default=1.0, help="weight of learning without forgetting's loss")
    s.add_argument("--workers", type=int, default=0, help="processes decoding images (worth it on a GPU machine)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bear_classifier", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("gather", help="search the web and download images per class")
    s.add_argument("--dest", type=Path, default=Path("data/bears"))
    s.add_argument("--per-class", type=int, default=150)
    s.set_defaults(func=cmd_gather)

    s = sub.add_parser("verify", help="report (and with --fix delete) broken, tiny and duplicate images")
    s.add_argument("root", type=Path)
    s.add_argument("--fix", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("review", help="write the most suspicious labels as an HTML sheet + CSV, or --apply one")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--model", type=Path, default=MODEL)
    s.add_argument("--out", type=Path, default=Path("review"))
    s.add_argument("--top", type=int, default=100)
    s.add_argument("--labels", type=Path, default=CLEANING)
    s.add_argument("--apply", type=Path, help="a marked-up review.csv to merge into --labels")
    s.add_argument("--feedback", action="store_true",
                   help="review the photos visitors flagged with \"That's wrong\" (BEAR_FEEDBACK_URL / BEAR_FEEDBACK_DB)")
    s.set_defaults(func=cmd_review)

    s = sub.add_parser("train", help="train on the cleaned folders and export the learner")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--labels", type=Path, default=CLEANING)
    s.add_argument("--valid", type=Path, default=VALID)
    s.add_argument("--negatives", type=Path, default=NEGATIVES, help="not-bear photos (subject = file-name prefix)")
    add_recipe(s)
    s.add_argument("--out", type=Path, default=MODEL)
    s.add_argument("--reports", type=Path, default=REPORTS, help="where the confusion matrix, top losses and reliability go")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("cv", help="leave-sources-out cross-validation of the training recipe (reports/cv.json)")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--labels", type=Path, default=CLEANING)
    s.add_argument("--valid", type=Path, default=VALID, help="hand-checked photos, scored separately in each fold")
    s.add_argument("--negatives", type=Path, default=NEGATIVES)
    s.add_argument("--folds", type=int, default=5)
    add_recipe(s)
    s.add_argument("--reports", type=Path, default=REPORTS)
    s.add_argument("--write-card", action="store_true", help="store the folds' figures in the model card")
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("evaluate", help="accuracy on the clean validation set and on non-bear photos")
    s.add_argument("--model", type=Path, default=MODEL)
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--valid", type=Path, default=VALID)
    s.add_argument("--negatives", type=Path, default=NEGATIVES)
    s.add_argument("--reports", type=Path, default=REPORTS)
    s.add_argument("--write-card", action="store_true", help="store the results in the model card")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="print the label and probability for each photo")
    s.add_argument("photos", nargs="+")
    s.add_argument("--model", type=Path, default=SERVED, help="the served model (export.onnx)")
    s.add_argument("--heatmap", type=Path, metavar="DIR",
                   help="also write DIR/<stem>.png (where the model looked) and DIR/<stem>_overlay.jpg")
    s.set_defaults(func=cmd_predict)

    args = p.parse_args(argv)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as e:  # one human line, not a traceback
        from .model import WeightsUnavailable

        if not isinstance(e, (WeightsUnavailable, FileNotFoundError, ValueError)):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
