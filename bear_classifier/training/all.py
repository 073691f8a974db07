"""Everything train.ipynb uses, for `from bear_classifier.training.all import *`, as fastai's own `all` modules are
used: the lesson's steps from fastai, and this project's, each a one-line call in the notebook."""
from ..classes import Classes
from ..model.backbone import normalization
from ..model.export import export
from .card import model_card
from .clean import auto_clean, cleaner_changes, write_labels
from .data import FolderLabel, image_files, read_labels, verify_photos
from .evaluate import evaluate
from .recipe import Recipe
from .train import (LearningWithoutForgetting, batch_size, create_learner, fit_none_of_these, labelled_items,
                    probe_head, set_temperature, with_negatives)

__all__ = ["Classes", "Recipe", "verify_photos", "image_files", "labelled_items", "with_negatives", "batch_size",
           "FolderLabel", "normalization", "create_learner", "auto_clean", "probe_head", "LearningWithoutForgetting",
           "set_temperature", "fit_none_of_these", "evaluate", "read_labels", "cleaner_changes", "write_labels",
           "model_card", "export"]
