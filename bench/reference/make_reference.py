"""Export the reference learner: the lesson's DataBlock and a fastai resnet18 (random weights: fine for timing).

Writes bench/reference/export.pkl (ignored by git). The benchmarks run it when it is missing.
"""
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> Path:
    import numpy as np
    from fastai.vision.all import (CategoryBlock, DataBlock, ImageBlock, RandomResizedCrop, RandomSplitter,
                                   aug_transforms, get_image_files, parent_label, resnet18, vision_learner)
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:  # generated images: only the pipeline's shape matters
        for label in ["black", "grizzly", "teddy"]:
            (Path(tmp) / label).mkdir()
            for i in range(4):
                Image.fromarray(np.random.randint(0, 255, (96, 96, 3), dtype=np.uint8)).save(Path(tmp) / label / f"{i}.jpg")
        bears = DataBlock(blocks=(ImageBlock, CategoryBlock), get_items=get_image_files,
                          splitter=RandomSplitter(valid_pct=0.2, seed=42), get_y=parent_label,
                          item_tfms=RandomResizedCrop(224, min_scale=0.5), batch_tfms=aug_transforms())
        dls = bears.dataloaders(Path(tmp), bs=4)
        learn = vision_learner(dls, resnet18, pretrained=False)
        out = HERE / "export.pkl"
        learn.export(out)
    return out


if __name__ == "__main__":
    print(main())
