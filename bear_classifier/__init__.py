"""bear_classifier: the fastai lesson-2 bear classifier as a tested package (train, evaluate, serve)."""
import warnings

# fastai's layers.py calls torch.jit.script at import time; torch 2.14 warns about it on every
# import, which would land in the app page and in CLI output. Nothing we can act on.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)

__version__ = "1.0.0"
__all__ = ["Client", "__version__"]


def __getattr__(name: str):
    """`from bear_classifier import Client` (the HTTP API's client), imported only when asked for: the package stays
    light to import."""
    if name == "Client":
        from .api.client import Client

        return Client
    raise AttributeError(f"module 'bear_classifier' has no attribute {name!r}")
