"""Own classes, fine-tuned for real: three pool subjects as DIR/<class>/*, trained by `train_model` as a fork would,
then scored on its validation photos, on photos of none of them (other subjects, bears, people), and on the pool's
photos of kinds of the classes (openset_features.KINDS: a basset is a dog), which are not other subjects.

Usage: python -m bench.own_classes dog cat car [--sample 600] [--seed 42] [--no-probe]   (a few minutes on 2 cores)
"""
from __future__ import annotations

import argparse
import random
from pathlib import Path

import torch


from bear_classifier.training.data import image_files, subject
from bench.openset_features import DATA, RESULTS, kinds_of, pool_sources
from bench.people import people_files


def folder(subjects: list[str]) -> Path:
    """RESULTS/own/<a_b_c>/<subject>/ of links to the pool's photos of each subject."""
    root = RESULTS / "own" / "_".join(subjects)
    for p in image_files(DATA / "not_bear"):
        if subject(p) in subjects:
            (root / subject(p)).mkdir(parents=True, exist_ok=True)
            if not (root / subject(p) / p.name).exists():
                (root / subject(p) / p.name).symlink_to(p)
    return root


def answers(learn, files: list[Path]) -> torch.Tensor:
    probs, _ = learn.get_preds(dl=learn.dls.test_dl(files, num_workers=0))
    return probs.argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("subjects", nargs=3)
    parser.add_argument("--sample", type=int, default=600, help="photos of other subjects and of bears, each")
    parser.add_argument("--seed", type=int, default=42, help="the validation split's, and training's")
    parser.add_argument("--no-probe", action="store_true", help="start the class head at chance (train.probe_head)")
    args = parser.parse_args()
    from bear_classifier.training.recipe import Recipe
    from bear_classifier.training.train import train_model

    torch.set_num_threads(2)
    learn, card = train_model(folder(args.subjects), Recipe(seed=args.seed, probe=not args.no_probe))
    none = len(learn.dls.vocab) - 1
    valid = learn.dls.valid_ds.items
    truth = torch.tensor([learn.dls.vocab.o2i[Path(p).parent.name] for p in valid])
    got = answers(learn, valid)
    rng = random.Random(0)
    kinds = kinds_of(args.subjects)  # a basset is a dog: counted apart, as photos of the classes
    others = [p for p in image_files(DATA / "not_bear") if subject(p) not in args.subjects and p.name not in kinds]
    kind_files = [p for p in image_files(DATA / "not_bear") if p.name in kinds]
    bears = [p for p in image_files(DATA / "bears") if p.parent.name in ("black", "grizzly", "teddy")]
    people = [p for p in people_files() if not p.name.startswith("lfw_")]
    print(f"{'/'.join(args.subjects)}: trained in {card['train_seconds']} s; gate {card['gate']}")
    print(f"  validation photos right: {(got == truth).float().mean():.2%} of {len(valid)}, "
          f"kept {(got != none).float().mean():.2%}")
    repo = {r["file"]: r["source_repo"] for r in pool_sources()}
    own = {repo[Path(p).name] for p in valid}  # where the classes' photos come from
    for name, files in (("other subjects", rng.sample(others, args.sample)), ("bears", rng.sample(bears, args.sample)),
                        ("people", people)):
        rejected = answers(learn, files) == none
        print(f"  {name} answered 'none of these': {rejected.float().mean():.2%} of {len(files)}")
        near = torch.tensor([repo.get(p.name) in own for p in files])
        if name == "other subjects" and near.any():  # a source's sibling classes (streets, buildings) are near
            print(f"    from the classes' own source: {rejected[near].float().mean():.2%} of {int(near.sum())}; "
                  f"from other sources: {rejected[~near].float().mean():.2%} of {int((~near).sum())}")
    if kind_files:
        truth = torch.tensor([learn.dls.vocab.o2i[kinds[p.name]] for p in kind_files])
        print(f"  kinds of the classes (ImageNet's photos of a basset, an ambulance...) named right: "
              f"{(answers(learn, kind_files) == truth).float().mean():.2%} of {len(kind_files)}")


if __name__ == "__main__":
    main()
