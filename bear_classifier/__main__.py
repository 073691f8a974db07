"""Command line: python -m bear_classifier {gather,verify,review,train,evaluate,predict} ..."""
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
MODEL = ROOT / "export.pkl"
SERVED = ROOT / "export.pt"  # written by `train` next to export.pkl


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
    from .review import review

    csv_path, html_path = review(args.data, args.model, args.out, top=args.top, labels_csv=args.labels)
    print(f"open {html_path}, mark {csv_path}, then: python -m bear_classifier review --apply {csv_path}")
    return 0


def cmd_train(args) -> int:
    from .train import evaluate, export, train_model

    learn, card = train_model(args.data, args.labels, args.valid, arch=args.arch, epochs=args.epochs, lr=args.lr)
    card["valid_metrics"] = {k: v for k, v in evaluate(learn, out=args.reports).items() if k != "errors"}
    card = export(learn, args.out, card)
    print(json.dumps({k: card[k] for k in ("valid_metrics", "train_seconds", "size_mb", "sha256")}, indent=2))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_model

    result = evaluate_model(args.model, args.data, args.valid, args.negatives)
    print(json.dumps(result, indent=2))
    if args.write_card:  # the card sits next to the pickle; its sha256 is unaffected
        card_path = args.model.with_suffix(".json")
        card = json.loads(card_path.read_text())
        card["evaluation"] = result
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    return 0


def cmd_predict(args) -> int:
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
            pred = clf.predict(open_image(Path(photo).read_bytes()))
        except (ImageError, OSError) as e:
            print(f"{photo}: error: {e.strerror if isinstance(e, OSError) else e}", file=sys.stderr)
            status = 1
            continue
        note = "" if pred.is_bear else "  (not a bear)"
        print(f"{photo}: {pred}{note}")
    return status


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
    s.set_defaults(func=cmd_review)

    s = sub.add_parser("train", help="train on the cleaned folders and export the learner")
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--labels", type=Path, default=CLEANING)
    s.add_argument("--valid", type=Path, default=VALID)
    s.add_argument("--arch", default=OFFLINE_ARCH, choices=[OFFLINE_ARCH, *COURSE_ARCHS])
    s.add_argument("--epochs", type=int, default=30)
    s.add_argument("--lr", type=float, default=3e-3)
    s.add_argument("--out", type=Path, default=MODEL)
    s.add_argument("--reports", type=Path, default=ROOT / "reports", help="where the confusion matrix and top losses go")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="accuracy on the clean validation set and on non-bear photos")
    s.add_argument("--model", type=Path, default=MODEL)
    s.add_argument("--data", type=Path, default=DATA)
    s.add_argument("--valid", type=Path, default=VALID)
    s.add_argument("--negatives", type=Path, default=DATA.parent / "not_bear")
    s.add_argument("--write-card", action="store_true", help="store the results in the model card")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="print the label and probability for each photo")
    s.add_argument("photos", nargs="+")
    s.add_argument("--model", type=Path, default=SERVED, help="the TorchScript model (export.pt)")
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
