"""Command line: python -m bear_classifier {gather,verify,review,train,cv,evaluate,predict,models,mcp} ..."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .model import COURSE_ARCHS, OFFLINE_ARCH

# Everything else (the photos, the cleaning CSV, the hand-checked list, the negatives) is given on the
# command line: the Makefile passes the bear model's recipe; a fork needs only --data.
REPORTS = Path("reports")
TRAINING_ONLY = {"torch", "torchvision", "fastai", "timm"}  # requirements.txt's; the serving set has none of them


def model_path(out: Path) -> Path:
    """export.pkl in the folder `out`, or `out` itself where it names a .pkl file."""
    return out if out.suffix == ".pkl" else out / "export.pkl"


def default_model(name: str) -> Path:
    from .inference.predict import model_file

    return model_file(name)


def cmd_gather(args) -> int:
    from .training.gather import gather

    from .classes import FILE, Classes

    classes = Classes.from_file(args.classes or FILE)
    for label, results in gather(args.dest, classes, per_class=args.per_class).items():
        ok = sum(r.path is not None for r in results)
        print(f"{label}: {ok} downloaded, {len(results) - ok} skipped")
    return 0


def cmd_verify(args) -> int:
    from .training.data import image_files, verify_photos

    report = verify_photos(image_files(args.root), fix=args.fix)
    for path, reason in report.dropped.items():
        print(f"{path}: {reason}")
    print(report.summary())
    return 0


def cmd_review(args) -> int:
    if args.apply:
        from .inference.predict import card_classes, read_card
        from .training.clean import apply_review

        model = args.model or default_model("export.pkl")
        changes = apply_review(args.apply, args.labels, card_classes(read_card(model), model).labels)
        print(f"applied {len(changes)} changes to {args.labels}")
        return 0
    if args.feedback:
        from .page.feedback import FeedbackStore
        from .training.flags import review_feedback  # no torch: a serving machine can review its flags

        store = FeedbackStore.from_env()
        if store is None:
            raise ValueError("Storing feedback is turned off (BEAR_FEEDBACK=off): there is nothing to review.")
        if args.accept or args.accept_as or args.reject or args.delete:
            return decide_flags(store, args)
        csv_path, html_path = review_feedback(store, args.out)
        print(f"open {html_path}: the photos visitors flagged, not yet reviewed, under {args.out / 'feedback'}/"
              f"<label>/flag-<ID>.jpg. Then: review --feedback --data DATA --accept ID (or --accept-as ID=LABEL, "
              f"--reject ID, --delete ID), train, models promote (docs/production.md).")
        return 0
    from .training.review import review

    if args.data is None:
        raise ValueError("Give the photos to review: --data DIR (DIR/<class>/*).")
    csv_path, html_path = review(args.data, args.model or default_model("export.pkl"), args.out, top=args.top,
                                 labels_csv=args.labels)
    print(f"open {html_path}, mark {csv_path}, then: python -m bear_classifier review --apply {csv_path}")
    return 0


def decide_flags(store, args) -> int:
    """`review --feedback --accept ID --accept-as ID=LABEL --reject ID --delete ID --data DIR`."""
    from .classes import Classes
    from .training.flags import accept, forget, reject

    if args.data is None and (args.accept or args.accept_as):
        raise ValueError("Give the training photos accepted flags join: --data DIR (DIR/<class>/*).")
    labels = Classes.from_folders(args.data).labels if args.data else []
    for flag_id in args.accept:
        print(f"flag {flag_id}: accepted, now {accept(store, flag_id, args.data, labels)}")
    for pair in args.accept_as:
        flag_id, _, label = pair.partition("=")
        if not flag_id.isdigit() or not label:
            raise ValueError(f"--accept-as {pair!r}: write it as ID=LABEL, for example 12=grizzly.")
        print(f"flag {flag_id}: accepted as {label}, now {accept(store, int(flag_id), args.data, labels, label)}")
    for flag_id in args.reject:
        reject(store, flag_id, args.data)
        print(f"flag {flag_id}: rejected")
    for flag_id in args.delete:
        print(f"flag {flag_id}: deleted " + "; ".join(forget(store, flag_id, args.data)))
    return 0


def cmd_models(args) -> int:
    from .inference.versions import Models

    models = Models(args.models)
    if args.action == "list":
        served = models.served()
        for v in models.versions():
            metrics = v.card.get("valid_metrics", {})
            acc = f"validation {metrics['accuracy']:.1%} of {metrics['n']}" if "accuracy" in metrics else ""
            print(f"{'*' if v.name == served else ' '} {v.name}  exported {v.card.get('exported', '?')[:16]}  {acc}")
        for row in models.history()[-5:]:
            print(f"  {row['time']}  {row['how']:<9} {row['version']}")
        if served is None:
            from .inference.predict import served_model_path

            print(f"No version is served from {args.models} yet, so servers serve {served_model_path()} (BEAR_MODEL, "
                  f"else export.onnx). To serve versions: models promote PATH/export.onnx, then start the servers "
                  f"with BEAR_MODELS={args.models} (docs/production.md).")
        return 0
    if args.action == "rollback":
        name = models.previous()
        models.serve(name, "rollback")
        print(f"serving {name} again (running servers switch within seconds; open pages keep theirs until reloaded)")
        return 0
    if not args.version:
        raise ValueError("Name the version to promote (models list), or give the export.onnx that `train` wrote.")
    candidate = models.add(Path(args.version)) if Path(args.version).exists() else models.get(args.version)
    served = models.served()
    if served == candidate.name:
        print(f"{candidate.name} is already served.")
        return 0
    if served is not None and not gate(models.get(served), candidate, args):
        return 1
    models.serve(candidate.name, "promote" + (" --force" if args.force else ""))
    print(f"serving {candidate.name} (running servers switch within seconds; open pages keep theirs until reloaded)")
    return 0


def gate(served, candidate, args) -> bool:
    """Score both on the evaluation photos and the accepted corrections; print them side by side; True: promote."""
    from .inference.compare import RULE, Photo, compare, folder_photos, report, usable
    from .inference.predict import Classifier

    photos = folder_photos(args.eval) if args.eval and args.eval.is_dir() else []
    from .page.feedback import FeedbackStore

    store = FeedbackStore.from_env()
    if store is not None:
        photos += [Photo(f"correction {f.id}", f.label, f.photo) for f in store.all() if f.review == "accepted"]
    a, b = Classifier.load(served.path), Classifier.load(candidate.path)
    a.version, b.version = served.name, candidate.name
    photos, left_out = usable(photos, list(a.vocab))
    for line in left_out:
        print(f"left out: {line}")
    verdict = compare(a, b, photos)
    print(report(verdict, a.classes.none_label))
    print(RULE)
    if verdict.worse and not args.force:
        print(f"refused: {candidate.name} is worse than {served.name} ({'; '.join(verdict.worse)}). "
              f"Promote it anyway with --force.")
        return False
    if verdict.worse:
        print(f"promoted with --force although it is worse ({'; '.join(verdict.worse)})")
    return True


def cmd_train(args) -> int:
    from .classes import Classes
    from .training.evaluate import evaluate
    from .model.export import export
    from .model.openset import DistanceGate
    from .training.train import train_model

    classes = Classes.for_data(args.data, args.classes)
    learn, card = train_model(args.data, recipe_of(args), classes, args.labels, args.valid, args.negatives)
    reports = args.reports or model_path(args.out).parent / "reports"
    card["valid_metrics"] = {k: v for k, v in evaluate(learn, out=reports).items() if k != "errors"}
    card = export(learn, model_path(args.out), card)
    print(f"wrote {model_path(args.out)}, its .onnx (served) and its .json (model card); reports in {reports}")
    metrics = {k: v for k, v in card["valid_metrics"].items() if k != "confusion"}
    print(json.dumps(dict(valid_metrics=metrics, **{k: card[k] for k in ("train_seconds", "size_mb", "sha256")}), indent=2))
    confusion, none = card["valid_metrics"]["confusion"], len(classes.labels)
    right, refused = sum(row[i] for i, row in enumerate(confusion)), sum(row[none] for row in confusion[:none])
    after = ", which the epochs' accuracy above, counted before that answer was fitted, does not include" if isinstance(
        learn.model.gate, DistanceGate) else ""  # the gate fitted after the epochs (openset.fit_for_learner)
    print(f"validation: {right} of {metrics['n']} photos right ({metrics['accuracy']:.1%}); {refused} "
          f"photo{'s' * (refused != 1)} of the classes answered \"{classes.none_name}\"{after}")
    return 0


def cmd_cv(args) -> int:
    from .classes import Classes
    from .training.crossval import cross_validate

    result = cross_validate(args.data, args.labels, args.valid, args.negatives, args.reports or REPORTS,
                            n_folds=args.folds, classes=Classes.for_data(args.data, args.classes),
                            recipe=recipe_of(args))
    print(json.dumps({k: v for k, v in result.items() if k != "folds"}, indent=2))
    if args.write_card:
        write_card(args.model or default_model("export.pkl"), "cross_validation", result)
    return 0


def write_card(model: Path, key: str, value: dict) -> None:
    """Store `value` under `key` in the model card next to `model`; the models' sha256 are unaffected."""
    card_path = model.with_suffix(".json")
    card = json.loads(card_path.read_text())
    card[key] = value
    card_path.write_text(json.dumps(card, indent=2) + "\n")


def cmd_evaluate(args) -> int:
    from .training.evaluate import evaluate_model

    model = args.model or default_model("export.pkl")
    result = evaluate_model(model, args.data, args.valid, args.negatives, args.reports or REPORTS, args.labels)
    print(json.dumps(result, indent=2))
    if args.write_card:
        write_card(model, "evaluation", result)
    return 0


def cmd_predict(args) -> int:
    if args.url:
        return predict_remote(args)
    from .inference.answer import answer_bytes
    from .inference.heatmap import heatmap_image, overlay
    from .inference.images import ImageError
    from .inference.predict import Classifier, ModelError

    try:
        clf = Classifier.load(args.model)  # default: BEAR_MODEL, else export.onnx here, else the checkout's
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    status = 0
    for photo in args.photos:
        try:
            img, pred = answer_bytes(clf, Path(photo).read_bytes())  # as the page and the API read and answer it
        except (ImageError, OSError) as e:
            print(f"{photo}: error: {e.strerror if isinstance(e, OSError) else e}", file=sys.stderr)
            status = 1
            continue
        words = clf.classes.name(pred.label) + (f": {clf.classes.none_person}" if pred.person else "")
        print(f"{photo}: {pred}  ({words})")
        if args.heatmap:
            args.heatmap.mkdir(parents=True, exist_ok=True)
            heat = heatmap_image(pred.heatmap, img.size)
            heat.save(args.heatmap / f"{Path(photo).stem}.png")
            overlay(img, heat).save(args.heatmap / f"{Path(photo).stem}_overlay.jpg", quality=90)
    return status


def predict_remote(args) -> int:
    """`predict --url`: the same lines, answered by a server's API (api/client.py)."""
    from .api.client import ApiError, Client

    if args.model:
        raise ValueError("--url asks a server, which serves its own model: leave out --model.")
    client, status = Client(args.url), 0
    for photo in args.photos:
        try:
            data = Path(photo).read_bytes()
            answer = client.classify(data, heatmap=bool(args.heatmap))
        except OSError as e:
            print(f"{photo}: error: {e.strerror}", file=sys.stderr)
            status = 1
            continue
        except ApiError as e:
            if e.status not in (413, 422):  # not this photo: the server answers none (down, busy, a token): stop
                print(f"error: {e}", file=sys.stderr)
                return 2
            print(f"{photo}: error: {e}", file=sys.stderr)
            status = 1
            continue
        print(f"{photo}: {answer}  ({answer.words}{f': {answer.person}' if answer.person else ''})")
        if args.heatmap:
            save_heatmap(args.heatmap, Path(photo).stem, data, answer.heatmap_png)
    return status


def cmd_mcp(args) -> int:
    from .api.mcp import serve
    from .inference.predict import ModelError

    try:
        serve(url=args.url, model=args.model, http=args.http, host=args.host, port=args.port)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def save_heatmap(folder: Path, stem: str, data: bytes, png: bytes) -> None:
    """The server's map of where its model looked, and the photo lit by it, as the local `predict --heatmap` writes."""
    import io

    from PIL import Image

    from .inference.answer import read_photo
    from .inference.heatmap import overlay

    folder.mkdir(parents=True, exist_ok=True)
    img = read_photo(data)
    heat = Image.open(io.BytesIO(png)).resize(img.size, Image.BILINEAR)
    heat.save(folder / f"{stem}.png")
    overlay(img, heat).save(folder / f"{stem}_overlay.jpg", quality=90)


RECIPE_OPTIONS = ["arch", "freeze_epochs", "epochs", "lr", "forget_weight", "size", "bs", "workers"]


def add_recipe(s) -> None:
    """The training recipe's knobs, shared by `train` and `cv` so both measure the same thing. An option given
    changes the recipe file's value, which changes Recipe()'s default (shown)."""
    from .training.recipe import Recipe

    d = Recipe()
    s.add_argument("--recipe", type=Path, help="a recipe file (the bear model's: recipe.toml); default: Recipe()'s")
    s.add_argument("--arch", choices=[OFFLINE_ARCH, *COURSE_ARCHS], help=f"default {d.arch}")
    s.add_argument("--freeze-epochs", type=int, help=f"epochs of the head alone, fine_tune's first phase ({d.freeze_epochs})")
    s.add_argument("--epochs", type=int, help=f"epochs with the tail unfrozen ({d.epochs})")
    s.add_argument("--lr", type=float, help=f"default {d.lr}")
    s.add_argument("--forget-weight", type=float, help=f"weight of learning without forgetting's loss ({d.forget_weight})")
    s.add_argument("--size", type=int, help=f"pixels of the square the photos are squished to ({d.size})")
    s.add_argument("--bs", type=int, help=f"batch size, at most an eighth of the training photos ({d.bs})")
    s.add_argument("--workers", type=int, help=f"processes decoding images, worth it on a GPU machine ({d.workers})")


def recipe_of(args):
    """The Recipe the command line asks for: the recipe file's, or Recipe(), with the options given."""
    from .training.recipe import Recipe

    recipe = Recipe.from_file(args.recipe) if args.recipe else Recipe()
    return recipe.but(**{name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) is not None})


def add_data(s, valid_help: str = "hand-checked validation photos (file,label CSV, files relative to --data)",
             classes: bool = True) -> None:
    """The photos and what goes with them: only --data is needed; the rest is the bear model's recipe."""
    s.add_argument("--data", type=Path, required=True, help="photos in DATA/<class>/*")
    if classes:
        s.add_argument("--classes", type=Path,
                       help="the classes file (docs/classes.md); default: classes.toml here or in the checkout "
                            "where its labels are DATA's folders, else the folder names")
    s.add_argument("--labels", type=Path, help="the cleaning CSV (file,label; an empty label drops the file)")
    s.add_argument("--valid", type=Path, help=valid_help)
    s.add_argument("--negatives", type=Path,
                   help="photos of none of the classes (any photos; subject = file-name prefix before the last _)")


def models_default() -> Path:
    from . import environment

    return environment.models_folder() or Path("models")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bear_classifier", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("gather", help="search the web and download images per class")
    s.add_argument("--dest", type=Path, default=Path("data/photos"))
    s.add_argument("--classes", type=Path, help="the classes file whose search queries to run (default: classes.toml)")
    s.add_argument("--per-class", type=int, default=150)
    s.set_defaults(func=cmd_gather)

    s = sub.add_parser("verify", help="report (and with --fix delete) broken, tiny and duplicate images")
    s.add_argument("root", type=Path)
    s.add_argument("--fix", action="store_true")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("review", help="write the most suspicious labels as an HTML sheet + CSV, or --apply one")
    s.add_argument("--data", type=Path, help="photos in DATA/<class>/*")
    s.add_argument("--model", type=Path, help="the learner (default: export.pkl here, else the checkout's)")
    s.add_argument("--out", type=Path, default=Path("review"))
    s.add_argument("--top", type=int, default=100)
    s.add_argument("--labels", type=Path, default=Path("data/cleaning.csv"), help="the cleaning CSV to read and write")
    s.add_argument("--apply", type=Path, help="a marked-up review.csv to merge into --labels")
    s.add_argument("--feedback", action="store_true",
                   help="review the photos visitors flagged with \"That's wrong\" (BEAR_FEEDBACK_URL / BEAR_FEEDBACK_DB)")
    s.add_argument("--accept", type=int, action="append", default=[], metavar="ID",
                   help="with --feedback: flag ID joins --data as the visitor labelled it (docs/production.md)")
    s.add_argument("--accept-as", action="append", default=[], metavar="ID=LABEL", help="with --feedback: relabelled")
    s.add_argument("--reject", type=int, action="append", default=[], metavar="ID", help="with --feedback")
    s.add_argument("--delete", type=int, action="append", default=[], metavar="ID",
                   help="with --feedback: delete the flag everywhere (the store, and its copy in --data)")
    s.set_defaults(func=cmd_review)

    s = sub.add_parser("train", help="train on DATA/<class>/* and export the learner, its ONNX file and model card")
    add_data(s)
    add_recipe(s)
    s.add_argument("--out", type=Path, default=Path("."),
                   help="folder for export.pkl, export.onnx and export.json (or a path ending in .pkl)")
    s.add_argument("--reports", type=Path, help="confusion matrix, top losses, reliability (default: OUT/reports)")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("cv", help="leave-sources-out cross-validation of the training recipe (reports/cv.json)")
    add_data(s, "hand-checked photos, scored separately in each fold")
    s.add_argument("--folds", type=int, default=5)
    add_recipe(s)
    s.add_argument("--reports", type=Path)
    s.add_argument("--model", type=Path, help="whose model card --write-card writes to (default: export.pkl here)")
    s.add_argument("--write-card", action="store_true", help="store the folds' figures in the model card")
    s.set_defaults(func=cmd_cv)

    s = sub.add_parser("evaluate", help="accuracy on the validation photos and on negatives of unseen subjects")
    s.add_argument("--model", type=Path, help="the learner (default: export.pkl here, else the checkout's)")
    add_data(s, "the validation photos (file,label CSV); default: the model's own split of DATA, made again",
             classes=False)
    s.add_argument("--reports", type=Path)
    s.add_argument("--write-card", action="store_true", help="store the results in the model card")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="print the label and probability for each photo")
    s.add_argument("photos", nargs="+")
    s.add_argument("--model", type=Path,
                   help="the served model (default: BEAR_MODEL, else export.onnx here, else the checkout's)")
    s.add_argument("--heatmap", type=Path, metavar="DIR",
                   help="also write DIR/<stem>.png (where the model looked) and DIR/<stem>_overlay.jpg")
    s.add_argument("--url", help="ask the server at URL (its HTTP API, e.g. http://localhost:8866), not a local model")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("models", help="the models folder: list the versions, promote one (gated), roll back")
    s.add_argument("action", choices=["list", "promote", "rollback"])
    s.add_argument("version", nargs="?", help="promote: a version's name, or an export.onnx (or its folder) to add")
    s.add_argument("--models", type=Path, default=models_default(), help="the models folder (default: BEAR_MODELS, else models)")
    s.add_argument("--eval", type=Path, help="evaluation photos, EVAL/<label>/* (default: MODELS/eval)")
    s.add_argument("--force", action="store_true", help="promote a candidate the gate finds worse")
    s.set_defaults(func=cmd_models)
    s = sub.add_parser("mcp", help="serve the model as tools for AI assistants (MCP), over stdio or streamable HTTP")
    s.add_argument("--url", help="answer through the HTTP API of the page's server at URL (default: the served model here)")
    s.add_argument("--model", type=Path, help="the served model (default: BEAR_MODEL, else export.onnx here, else the checkout's)")
    s.add_argument("--http", action="store_true", help="serve streamable HTTP at http://HOST:PORT/mcp instead of stdio")
    s.add_argument("--host", default="127.0.0.1", help="with --http: the address to listen on (0.0.0.0: every one)")
    s.add_argument("--port", type=int, default=8867, help="with --http: the port (default 8867)")
    s.set_defaults(func=cmd_mcp)

    args = p.parse_args(argv)
    if getattr(args, "func", None) is cmd_models and args.eval is None:
        args.eval = args.models / "eval"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except ModuleNotFoundError as e:  # the serving set (no torch) asked to train, evaluate or review a learner
        if e.name not in TRAINING_ONLY:
            raise
        print(f"error: {args.command} needs the training set ({e.name} is not installed here): "
              "pip install -r requirements.txt", file=sys.stderr)
        return 2
    except Exception as e:  # one human line, not a traceback
        from .inference.predict import ModelError

        backbone = sys.modules.get(f"{__package__}.model.backbone")  # imported (with torch) only where a network was
        if not isinstance(e, (FileNotFoundError, ValueError, ModelError, *([backbone.WeightsUnavailable] if backbone
                                                                           else []))):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
