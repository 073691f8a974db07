"""bear_classifier: the fastai lesson-2 bear classifier as a tested package (train, evaluate, serve)."""
import warnings

# fastai's layers.py calls torch.jit.script at import time; torch 2.14 warns about it on every
# import, which would land in the app page and in CLI output. Nothing we can act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "1.0.0"
