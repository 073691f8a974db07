# Voila's Python configuration for the app (JUPYTER_CONFIG_PATH=share/jupyter/config, as `make app` and the
# tests set it). Voila reads voila.json from the working directory, but its Python config only as
# voila.py, a name that would hide the voila package itself from `python -m voila` if it sat there.
import logging


def page_config_hook(page_config, base_url, settings, log, voila_configuration, notebook_path):
    """The served model's title and question for the bear template's header and the browser tab, from its
    model card (called for preheated and cold kernels alike). A card that can't be read leaves the
    notebook's own first cell in their place, and a line in the server log."""
    try:
        from bear_classifier.predict import served_classes

        classes = served_classes()
    except Exception:
        (log or logging.getLogger(__name__)).exception("the model card's title could not be read")
        return page_config
    return {**page_config, "bearTitle": classes.title, "bearQuestion": classes.question}


c.VoilaConfiguration.page_config_hook = page_config_hook  # noqa: F821  (c: the config traitlets loads this file with)
