"""The command line's training commands: gather, verify and review photos, decide visitors' flags, train,
cross-validate and evaluate (python -m bear_classifier; __main__ parses the arguments)."""
from __future__ import annotations

import json
from pathlib import Path

# Everything else (the photos, the cleaning CSV, the hand-checked list, the negatives) is given on the
# command line: the Makefile passes the bear model's recipe; a fork needs only --data.
REPORTS = Path("reports")
RECIPE_OPTIONS = ["arch", "freeze_epochs", "epochs", "lr", "forget_weight", "size", "bs", "workers"]


def model_path(out: Path) -> Path:
    """export.pkl in the folder `out`, or `out` itself where it names a .pkl file."""
    return out if out.suffix == ".pkl" else out / "export.pkl"


def default_model(name: str) -> Path:
    from ..inference.predict import model_file

    return model_file(name)


def cmd_gather(args) -> int:
    from ..training.gather import gather

    from ..classes import FILE, Classes

    classes = Classes.from_file(args.classes or FILE)
    for label, results in gather(args.dest, classes, per_class=args.per_class).items():
        ok = sum(r.path is not None for r in results)
        print(f"{label}: {ok} downloaded, {len(results) - ok} skipped")
    return 0


def cmd_verify(args) -> int:
    from ..training.data import image_files, verify_photos

    report = verify_photos(image_files(args.root), fix=args.fix)
    for path, reason in report.dropped.items():
        print(f"{path}: {reason}")
    print(report.summary())
    return 0


def cleaning_csv(args) -> Path:
    """The cleaning CSV `review` reads and `review --apply` writes: --labels, else DATA-cleaning.csv beside the photos,
    where train.ipynb's cleaner writes it (`train --labels` reads it)."""
    if args.labels:
        return args.labels
    if args.data:
        return args.data.with_name(f"{args.data.name}-cleaning.csv")
    raise ValueError("Give the cleaning CSV to merge the sheet into: --labels FILE (then train with --labels FILE), "
                     "or your photos' folder: --data DIR (then DIR-cleaning.csv beside it).")


def cmd_review(args) -> int:
    if args.apply:
        from ..inference.predict import card_classes, read_card
        from ..training.clean import apply_review

        model, labels = args.model or default_model("export.pkl"), cleaning_csv(args)
        changes = apply_review(args.apply, labels, card_classes(read_card(model), model).labels)
        print(f"applied {len(changes)} changes to {labels}; train again with --labels {labels}")
        return 0
    if args.feedback:
        from ..page.feedback import FeedbackStore
        from ..training.flags import review_feedback  # no torch: a serving machine can review its flags

        store = FeedbackStore.to_read()
        if store is None:
            raise ValueError("Storing feedback is turned off (BEAR_FEEDBACK=off): there is nothing to review.")
        if args.accept or args.accept_as or args.reject or args.delete:
            return decide_flags(store, args)
        csv_path, html_path = review_feedback(store, args.out)
        print(f"open {html_path}: the photos visitors flagged, not yet reviewed, under {args.out / 'feedback'}/"
              f"<label>/flag-<ID>.jpg. Then: review --feedback --data DATA --accept ID (or --accept-as ID=LABEL, "
              f"--reject ID, --delete ID), train, models promote (docs/production.md).")
        return 0
    from ..training.review import apply_command, review

    if args.data is None:
        raise ValueError("Give the photos to review: --data DIR (DIR/<class>/*).")
    model, labels = args.model or default_model("export.pkl"), cleaning_csv(args)
    csv_path, html_path = review(args.data, model, args.out, labels, top=args.top)
    print(f"open {html_path}, mark {csv_path}, then: {apply_command(args.out, model, labels)}")
    return 0


def decide_flags(store, args) -> int:
    """`review --feedback --accept ID --accept-as ID=LABEL --reject ID --delete ID --data DIR`."""
    from ..classes import Classes
    from ..training.flags import accept, forget, reject

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


def cmd_train(args) -> int:
    from ..classes import Classes
    from ..training.evaluate import evaluate
    from ..model.export import export
    from ..model.openset import DistanceGate
    from ..training.train import train_model

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
    from ..classes import Classes
    from ..training.crossval import cross_validate

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
    from ..training.evaluate import evaluate_model

    model = args.model or default_model("export.pkl")
    result = evaluate_model(model, args.data, args.valid, args.negatives, args.reports or REPORTS, args.labels)
    print(json.dumps(result, indent=2))
    if args.write_card:
        write_card(model, "evaluation", result)
    return 0


def recipe_of(args):
    """The Recipe the command line asks for: the recipe file's, or Recipe(), with the options given."""
    from ..training.recipe import Recipe

    recipe = Recipe.from_file(args.recipe) if args.recipe else Recipe()
    return recipe.but(**{name: getattr(args, name) for name in RECIPE_OPTIONS if getattr(args, name) is not None})
