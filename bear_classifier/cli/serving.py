"""The command line's serving commands: predict (here or through a server's API), the models folder's versions
(list, promote behind the gate, roll back) and the MCP server (python -m bear_classifier; __main__ parses them)."""
from __future__ import annotations

import sys
from pathlib import Path


def cmd_predict(args) -> int:
    if args.url:
        return predict_remote(args)
    from ..inference.answer import answer_bytes
    from ..inference.heatmap import heatmap_image, overlay
    from ..inference.images import ImageError
    from ..inference.predict import Classifier, ModelError

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
        print(f"{photo}: {pred}  ({words})", flush=True)  # in order with the errors on stderr, when both are piped
        if args.heatmap:
            args.heatmap.mkdir(parents=True, exist_ok=True)
            heat = heatmap_image(pred.heatmap, img.size)
            heat.save(args.heatmap / f"{Path(photo).stem}.png")
            overlay(img, heat).save(args.heatmap / f"{Path(photo).stem}_overlay.jpg", quality=90)
    return status


def predict_remote(args) -> int:
    """`predict --url`: the same lines, answered by a server's API (api/client.py)."""
    from ..api.client import ApiError, Client

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
        print(f"{photo}: {answer}  ({answer.words}{f': {answer.person}' if answer.person else ''})", flush=True)
        if args.heatmap:
            save_heatmap(args.heatmap, Path(photo).stem, data, answer.heatmap_png)
    return status


def save_heatmap(folder: Path, stem: str, data: bytes, png: bytes) -> None:
    """The server's map of where its model looked, and the photo lit by it, as the local `predict --heatmap` writes."""
    import io

    from PIL import Image

    from ..inference.answer import read_photo
    from ..inference.heatmap import overlay

    folder.mkdir(parents=True, exist_ok=True)
    img = read_photo(data)
    heat = Image.open(io.BytesIO(png)).resize(img.size, Image.BILINEAR)
    heat.save(folder / f"{stem}.png")
    overlay(img, heat).save(folder / f"{stem}_overlay.jpg", quality=90)


def cmd_mcp(args) -> int:
    from ..api.mcp import serve
    from ..inference.predict import ModelError

    try:
        serve(url=args.url, model=args.model, http=args.http, host=args.host, port=args.port)
    except ModelError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


def cmd_models(args) -> int:
    from ..inference.versions import Models

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
            from ..inference.predict import served_model_path

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
    from .. import environment
    from ..inference.compare import RULE, Photo, compare, folder_photos, report, usable
    from ..inference.predict import Classifier
    from ..page.feedback import FeedbackStore, NoStore

    photos = folder_photos(args.eval) if args.eval and args.eval.is_dir() else []
    try:
        store = FeedbackStore.to_read()  # a setting that is wrong (BEAR_ANSWERS_*...) stops the gate: it's a sentence
    except NoStore as e:  # no store here: the evaluation photos alone decide, and the gate says so
        print(f"corrections left out: {e}")
        store = None
    if store is None and not environment.feedback_on():
        print("corrections left out: storing feedback is off (BEAR_FEEDBACK=off)")
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
