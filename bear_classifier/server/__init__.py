"""What the Jupyter server runs for the page: the kernel websocket guard, and whose kernel is whose.

Both lean on parts of jupyter_server and Voilà that are not public API (docs/security.md lists each name), written
for the versions below: a server that runs others says so once, at start, with what to do.
"""
from __future__ import annotations

import logging
from importlib.metadata import PackageNotFoundError, version

log = logging.getLogger(__name__)
WRITTEN_FOR = {"jupyter_server": "2.21.1", "voila": "0.5.13"}


def version_mismatches() -> dict[str, tuple[str, str | None]]:
    """{package: (written for, installed)} for each package whose installed version differs."""
    out = {}
    for package, wanted in WRITTEN_FOR.items():
        try:
            installed: str | None = version(package)
        except PackageNotFoundError:
            installed = None
        if installed != wanted:
            out[package] = (wanted, installed)
    return out


def warn_on_other_versions() -> None:
    mismatches = version_mismatches()
    if mismatches:
        found = ", ".join(f"{p} {have or 'missing'} (written for {want})" for p, (want, have) in mismatches.items())
        log.warning("The page's websocket guard and visitor checks use private parts of jupyter_server and Voila, and "
                    "this server has %s: install the pinned versions (pip install -r requirements-serve.txt), or check "
                    "the names in docs/security.md against these before serving in public.", found)


warn_on_other_versions()
