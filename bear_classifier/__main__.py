"""Photos in, answers out: gather, check and review photos, train and evaluate a model, predict, promote its
versions, and serve it to AI assistants (MCP).

The command line (python -m bear_classifier COMMAND): the arguments of each command, parsed here; the commands
themselves are in cli/training.py and cli/serving.py."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .cli.serving import cmd_mcp, cmd_models, cmd_predict
from .cli.training import cmd_cv, cmd_evaluate, cmd_gather, cmd_review, cmd_train, cmd_verify
from .model import COURSE_ARCHS, OFFLINE_ARCH

TRAINING_ONLY = {"torch", "torchvision", "fastai", "timm"}  # requirements.txt's; the serving set has none of them


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
    p = argparse.ArgumentParser(prog="python -m bear_classifier", description=__doc__.split("\n\n")[0])
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
    s.add_argument("--labels", type=Path, help="the cleaning CSV to read and write (default: DATA-cleaning.csv beside "
                   "the photos; the bear model's is data/cleaning.csv)")
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
    except BrokenPipeError:  # `predict ... | head`: the reader has gone, and wants nothing more (Python's docs, SIGPIPE)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the exit's flush finds nowhere to fail
        return 141
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
