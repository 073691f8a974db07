"""Pooled views of every pool photo and every photo of a person, through the shipped network and the untouched one.

One decode and one trunk pass per photo (the trunk is frozen, so both networks share it), then both tails.
Cached per group under bench/results/features_<group>.pt: {"files", "tuned", "untouched"}, views (N, 5, C) float16;
and the shipped network's class head, ImageNet head, temperature and ImageNet gate in shipped_heads.pt, which is all
bench/openset_study.py needs of it.
Usage: python -m bench.openset_features   (about 15 minutes on 2 busy CPU cores)
"""
from __future__ import annotations

from pathlib import Path

import torch


from bench import ROOT
from bear_classifier.training.data import image_files
from bear_classifier.model.backbone import create_imagenet_model, split_imagenet_model
from bear_classifier.model.classifier import pooled_views
from bear_classifier.model.learner import load_model
from bench.people import people_files

DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


# The not-bear subjects closest to a bear (furry mammals, canids, primates): the false bears found elsewhere.
BEAR_LIKE = set("""arctic_fox grey_fox kit_fox red_fox coyote dingo timber_wolf white_wolf red_wolf african_hunting_dog
hyena baboon capuchin chimpanzee colobus gibbon gorilla guenon howler_monkey langur macaque marmoset orangutan patas
proboscis_monkey siamang spider_monkey squirrel_monkey titi badger beaver marmot otter polecat mink weasel skunk
wombat koala porcupine three_toed_sloth wild_boar hog warthog bison ox water_buffalo sea_lion guinea_pig hamster
meerkat mongoose lynx cougar lion""".split())
BEARS = ["black", "grizzly", "teddy"]  # the shipped model's classes, in its vocab's order
# What WordNet files under a class, as ImageNet rows, for the own-class benches' classes whose kinds it lists
# plainly: a basset is a dog, a tabby a (domestic) cat, a bald eagle a bird, a jeep a car, an alp a mountain. The
# pool's one ImageNet sample photo of each such row is a photo of the class, not "another subject", when the class
# is one of a fork's: a gate that keeps it is right, and the benches count it apart. Scenes (buildings, sea, forest)
# have no entry: their ImageNet photos (a church, a seashore) stay among the other subjects, which can only lower
# their figures.
KINDS = {"dog": range(151, 269), "cat": range(281, 286), "bird": [*range(7, 25), *range(80, 101), *range(127, 147)],
         "car": [407, 436, 468, 511, 609, 627, 656, 661, 751, 817], "mountain": [970, 980]}


def groups() -> dict[str, list[Path]]:
    bears = [p for p in image_files(DATA / "bears") if p.parent.name in ("black", "grizzly", "teddy")]
    return {"people": people_files(), "bears": bears, "not_bear": image_files(DATA / "not_bear")}


def extract(learn, untouched_tail: torch.nn.Module, files: list[Path], untouched: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Pooled views (N, 5, C) float16 of `files` through `learn`'s network and, if `untouched`, `untouched_tail`."""
    from fastprogress.fastprogress import progress_bar

    net = learn.model.cpu().eval()
    tuned, plain = [], []
    with torch.inference_mode():
        for xb, in progress_bar(learn.dls.test_dl(files, bs=64, num_workers=0)):
            trunk = net.trunk(xb.as_subclass(torch.Tensor))
            tuned.append(pooled_views(net.tail(trunk)).half())
            if untouched:
                plain.append(pooled_views(untouched_tail(trunk)).half())
    return torch.cat(tuned), (torch.cat(plain) if untouched else None)


def save_heads(net: torch.nn.Module) -> None:
    """The class head, ImageNet head, temperature and ImageNet gate of `net` (a GatedNet), for the study."""
    from bear_classifier.model.classifier import ImageNetGate

    gate = next(m for m in net.gate.modules() if isinstance(m, ImageNetGate))
    torch.save(dict(head=net.head[-1].state_dict(), imagenet=net.imagenet.module.state_dict(),
                    temperature=float(net.temperature), sharpness=gate.sharpness, corners=gate.corners,
                    groups=[(ids, float(t)) for ids, t in zip(gate.rows, gate.thresholds)]),
               RESULTS / "shipped_heads.pt")


def pool_sources() -> list[dict]:
    """The rows of the everyday photos' SOURCES.csv: file, subject, source_repo, source_commit, source_path."""
    import csv

    with open(DATA / "not_bear" / "SOURCES.csv", newline="") as f:
        return list(csv.DictReader(f))


def kinds_of(classes: list[str]) -> dict[str, str]:
    """{file name: the class it is a kind of} for the ImageNet sample photos whose row KINDS files under `classes`.
    By file, not subject: two rows share a name (cardigan: a corgi and a sweater; crane: a bird and a machine)."""
    from timm.data import ImageNetInfo

    rows = {i: c for c in classes for i in KINDS.get(c, ())}
    index = {w: i for i, w in enumerate(ImageNetInfo().label_names())}
    return {r["file"]: rows[index[wnid]] for r in pool_sources()
            if r["source_repo"] == "EliSchwartz/imagenet-sample-images"
            and index.get(wnid := r["source_path"].split("_")[0]) in rows}


def load(group: str) -> dict:
    return torch.load(RESULTS / f"features_{group}.pt")


def main() -> None:
    torch.set_num_threads(2)
    learn = load_model(ROOT / "export.pkl")
    untouched_tail = split_imagenet_model(create_imagenet_model())[1].eval()
    RESULTS.mkdir(parents=True, exist_ok=True)
    save_heads(learn.model)
    for group, files in groups().items():
        out = RESULTS / f"features_{group}.pt"
        if out.exists():
            continue
        print(f"{group}: {len(files)} photos", flush=True)
        tuned, plain = extract(learn, untouched_tail, files)
        rel = [p.relative_to(DATA).as_posix() if p.is_relative_to(DATA) else p.name for p in files]
        torch.save(dict(files=rel, tuned=tuned, untouched=plain), out)


if __name__ == "__main__":
    main()
