"""Where the API joins the page's server: standalone Voila (its identity provider's handlers, set in voila.json), and
a Jupyter server such as Binder's (a server extension), each under the server's own prefix."""
from __future__ import annotations

import logging

from jupyter_server.utils import url_path_join

from .. import environment
from ..page.kernel import free_big_blocks_at_once
from ..server.visitors import Visitors
from . import guide, openapi
from .handlers import Api, Classify, Health, ModelInfo, Ready, base_url
from .limits import PerMinute
from .service import Service, Unavailable

log = logging.getLogger(__name__)


class OpenApi(Api):
    """GET /api/openapi.json: the OpenAPI 3.1 document, its server the address this request reached."""

    def get(self) -> None:
        limits = self.service.limits
        self.write_json(openapi.document(base_url(self).rstrip("/"), limits.max_images, limits.max_bytes / 2**20))


class Guide(Api):
    """GET /api/docs: the "Use via API" page."""

    def get(self) -> None:
        try:
            served = self.service.model.classifier().classes
            classes = [*((k.label, k.name) for k in served.kinds), (served.none_label, served.none_name)]
        except Unavailable:
            classes = None
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Content-Security-Policy", guide.CSP)
        self.set_header("Cache-Control", "no-cache")
        self.finish(guide.page(base_url(self), self.service.limits, classes))


def handlers(prefix: str, service: Service | None = None) -> list[tuple]:
    """The API's routes under `prefix` (the server's path, "/" when served at the root), all sharing one Service:
    one model session and one rate per address for the whole server process."""
    free_big_blocks_at_once()  # request bodies and photos come and go in MBs: give them back to the system when freed
    service = service or Service()
    rate = PerMinute(service.limits.per_minute)
    # (route, handler, wants the token, counts toward the rate): the probes neither, the documents no token.
    routes = [("classify", Classify, True, True), ("model", ModelInfo, True, True), ("health", Health, False, False),
              ("ready", Ready, False, False), ("openapi.json", OpenApi, False, True), ("docs", Guide, False, True)]
    log.info("the API: %s (%d turns, %d waiting at most, %s a minute per address, token %s)",
             url_path_join(prefix, "api/docs"), service.limits.turns, service.limits.queue,
             service.limits.per_minute or "no limit", "on" if service.limits.token else "off")
    return [(url_path_join(prefix, "api", name), handler,
             {"service": service, "rate": rate, "token": token, "limited": limited})
            for name, handler, token, limited in routes]


class ApiVisitors(Visitors):
    """The page's visitors (server.visitors.Visitors), and the API: standalone Voila 0.5.13 adds the identity
    provider's handlers to its own (voila/app.py, init_handlers), ahead of the page's catch-all route, but without
    its server_url before them: the API's carry it here."""

    def get_handlers(self) -> list[tuple]:
        if not environment.api_on():
            return super().get_handlers()
        prefix = getattr(self.parent, "server_url", None) or getattr(self.parent, "base_url", None) or "/"
        return [*super().get_handlers(), *handlers(prefix)]


def _jupyter_server_extension_points() -> list[dict]:
    """A Jupyter server (Binder's, where Voila is an extension) loads the API with this module as an extension."""
    return [{"module": "bear_classifier.api.routes"}]


def _load_jupyter_server_extension(serverapp) -> None:
    if environment.api_on():
        serverapp.web_app.add_handlers(".*$", handlers(serverapp.base_url))

