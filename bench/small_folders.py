"""Small folders, as a fork starts: three pool subjects of 35-40 photos each (foods, clothes), trained by
`train_model` under each recipe on the same split, scored on the validation photos and on other subjects.

Usage: python -m bench.small_folders [--recipes now,lr1e-2,probe] [--seed 42]   (about a minute a run on 2 cores)
Results accumulate in bench/results/small_folders.json (a run already there is not repeated).
"""
from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import torch


from bear_classifier.training.data import image_files, subject
from bench.openset_features import DATA, RESULTS
from bench.own_classes import answers, folder

SETS = [("apple_pie", "baklava", "beignets"), ("baby_back_ribs", "beef_carpaccio", "beef_tartare"),
        ("beet_salad", "bibimbap", "bread_pudding"), ("breakfast_burrito", "apple_pie", "bread_pudding"),
        ("hat", "pants", "shoes"), ("dress", "skirt", "shirt"), ("t_shirt", "longsleeve", "outwear"),
        ("shorts", "pants", "skirt")]
RECIPES = {"now": dict(lr=2e-3, probe=False), "lr1e-2": dict(lr=1e-2, probe=False), "probe": dict(lr=2e-3, probe=True)}
OUT = RESULTS / "small_folders.json"


def run(subjects: tuple[str, ...], recipe: str, seed: int, others: list[Path]) -> dict:
    from bear_classifier.training.recipe import Recipe
    from bear_classifier.training.train import train_model

    learn, card = train_model(folder(list(subjects)), Recipe(seed=seed, **RECIPES[recipe]))
    valid = learn.dls.valid_ds.items
    truth = torch.tensor([learn.dls.vocab.o2i[Path(p).parent.name] for p in valid])
    got = answers(learn, valid)
    none = len(learn.dls.vocab) - 1
    return dict(right=int((got == truth).sum()), valid=len(valid), seconds=card["train_seconds"],
                rejected=int((answers(learn, others) == none).sum()), others=len(others))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--recipes", default="now,lr1e-2,probe")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--others", type=int, default=200, help="photos of other subjects, answered 'none of these'?")
    args = parser.parse_args()
    torch.set_num_threads(2)
    results = json.loads(OUT.read_text()) if OUT.exists() else {}
    recipes = args.recipes.split(",")
    for subjects in SETS:
        pool = [p for p in image_files(DATA / "not_bear") if subject(p) not in subjects]
        others = random.Random(0).sample(pool, args.others)
        for recipe in recipes:
            key = f"{'/'.join(subjects)}|{recipe}|{args.seed}"
            if key not in results:
                results[key] = run(subjects, recipe, args.seed, others)
                OUT.write_text(json.dumps(results, indent=1))
            r = results[key]
            print(f"{key:55} {r['right']:3}/{r['valid']:3} right, {r['rejected']:3}/{r['others']} others rejected, "
                  f"{r['seconds']:.0f} s", flush=True)
    print(f"\n{'recipe':14} {'right':>14} {'others rejected':>18}   (seed {args.seed}, {len(SETS)} sets)")
    for recipe in recipes:
        rs = [results[f"{'/'.join(s)}|{recipe}|{args.seed}"] for s in SETS]
        right, valid = sum(r["right"] for r in rs), sum(r["valid"] for r in rs)
        rej, oth = sum(r["rejected"] for r in rs), sum(r["others"] for r in rs)
        print(f"{recipe:14} {right / valid:8.2%} of {valid:3} {rej / oth:10.2%} of {oth}")


if __name__ == "__main__":
    main()
