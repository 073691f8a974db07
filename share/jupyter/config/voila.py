# Voila's Python configuration for the app. Installing the package puts this file where Voila looks
# (<prefix>/etc/jupyter), so plain `voila app.ipynb` and the Jupyter server on Binder read it; `make app` and the
# tests point JUPYTER_CONFIG_PATH at this folder instead. (Voila reads voila.json from the working directory, but
# its Python config there only as voila.py, a name that would hide the voila package from `python -m voila`.)
import logging
import os
from pathlib import Path

from traitlets.config.loader import JSONFileConfigLoader


TEMPLATE = "bear"  # this app's template (voila.json); other notebooks served from the same environment are left alone


def page_config_hook(page_config, base_url, settings, log, voila_configuration, notebook_path):
    """The served model's title and question for the bear template's header and the browser tab, from its
    model card (called for preheated and cold kernels alike). A card that can't be read leaves the
    notebook's own first cell in their place, and a line in the server log."""
    if voila_configuration.template != TEMPLATE:
        return page_config
    try:
        from bear_classifier.inference.predict import served_classes

        classes = served_classes()
    except Exception as e:
        (log or logging.getLogger(__name__)).error("The model card's title could not be read: %s", e)
        return page_config
    return {**page_config, "bearTitle": classes.title, "bearQuestion": classes.question}


def trust_notebooks_without_outputs(folder: Path) -> None:
    """Voila runs a notebook afresh, so one saved without outputs (app.ipynb is: a test checks it) has nothing
    to distrust. Signing it, as `jupyter trust` does, keeps "Notebook app.ipynb is not trusted" out of the log,
    where it came once for every kernel."""
    import nbformat
    from nbformat.sign import NotebookNotary

    notary = None
    for path in folder.glob("*.ipynb"):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:
            continue  # not a notebook Voila could serve either: it says so when asked
        if any(cell.get("outputs") for cell in nb.cells):
            continue
        notary = notary or NotebookNotary()
        if not notary.check_signature(nb):
            notary.sign(nb)


def serves_this_app(folder: Path) -> bool:
    """Whether Voila is started where this app's voila.json names its template (not any other notebook's folder)."""
    import json

    try:
        return json.loads((folder / "voila.json").read_text())["VoilaConfiguration"]["template"] == TEMPLATE
    except (OSError, ValueError, KeyError, TypeError):
        return False


def served_folder() -> tuple[Path | None, object]:
    """The folder standalone Voila serves (its notebook's, or the one it was given), and the Voila application;
    (None, None) where Voila runs as a Jupyter server extension (Binder), whose folder is the server's own."""
    from traitlets.config import Application

    app = Application.instance() if Application.initialized() else None
    if type(app).__name__ != "Voila":
        return None, None
    return Path(app.root_dir), app  # as Voila makes it: os.path.abspath, so a symlinked notebook's own folder


c.VoilaConfiguration.page_config_hook = page_config_hook  # noqa: F821  (c: the config traitlets loads this file with)
folder, app = served_folder()
if serves_this_app(Path.cwd()):
    trust_notebooks_without_outputs(Path.cwd())
elif folder is not None and serves_this_app(folder):
    # Voila reads voila.json from the working directory only: started from another folder, the page was Voila's
    # plain one, without this app's template, API, guards and kernel pool, and nothing said why.
    if (Path.cwd() / "voila.json").exists():
        app.log.warning("%s has a voila.json of its own, so this app's settings (%s) are not used: start Voila "
                        "in %s instead.", Path.cwd(), folder / "voila.json", folder)
    else:
        app.log.info("Using this app's settings, %s, and its folder as the working directory", folder / "voila.json")
        c.merge(JSONFileConfigLoader("voila.json", str(folder)).load_config())  # noqa: F821
        # The server reads its model, classes file and stores from its working directory, as the kernels (which run
        # in the notebook's folder) do: the API answered 503, its model "missing", before this.
        if app.notebook_path:
            app.notebook_path = os.path.abspath(app.notebook_path)  # named from the folder Voila was started in
        os.chdir(folder)
        trust_notebooks_without_outputs(folder)
