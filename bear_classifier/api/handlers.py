"""The API's routes on the page's tornado server. Each request is checked (size, token, rate, type, a place) before any
of its body is kept, its body counted against the server's budget as it comes, and every answer is JSON with a
sentence for a person: never a traceback."""
from __future__ import annotations

import hmac
import json
import logging
import re

from tornado import httputil, web

from .. import metrics
from ..server.addresses import behind_tls, client_address
from .limits import PerMinute
from .service import Busy, Service, Unavailable

log = logging.getLogger(__name__)

# Bodies read as one image: what `curl --data-binary` sends unless told (form-urlencoded), or none at all.
RAW_TYPES = ("image/", "application/octet-stream", "application/x-www-form-urlencoded", "")
SEND = ("Send the photo as the request's body (Content-Type: image/jpeg, image/png...) or as files of a "
        "multipart/form-data request (curl -F image=@photo.jpg).")
HOST = re.compile(r"^[A-Za-z0-9.\-]+(:\d{1,5})?$|^\[[0-9A-Fa-f:.]+\](:\d{1,5})?$")


class Refused(web.HTTPError):
    """A request the API won't serve: its status, the sentence that says why and what to do, and any headers."""

    def __init__(self, status: int, sentence: str, **headers: str):
        super().__init__(status, reason=httputil.responses.get(status, "Refused"))
        self.sentence, self.headers = sentence, headers


def base_url(handler: web.RequestHandler) -> str:
    """Where a client reaches this server, as it asked for it: scheme, host, and the server's prefix."""
    host = handler.request.host if HOST.match(handler.request.host or "") else "localhost"
    prefix = handler.settings.get("base_url") or "/"
    return f"{'https' if behind_tls(handler.request) else 'http'}://{host}{prefix}"


class Api(web.RequestHandler):
    """What every API route shares: JSON answers and errors, the optional token, the rate per address, CORS."""

    def initialize(self, service: Service, rate: PerMinute, token: bool = True, limited: bool = True) -> None:
        """`token`: the route wants the deployer's token, if any; `limited`: it counts toward an address's rate."""
        self.service, self.rate, self.token, self.limited = service, rate, token, limited
        self.set_default_headers()  # again: tornado first calls it before initialize, without the CORS origins

    def check_xsrf_cookie(self) -> None:
        """No cookie is ever a credential here (only a bearer token is), so no cross-site form can act as someone;
        inside a Jupyter server (Binder), whose settings ask every POST for its cookie, programs could not call."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if self.allowed_origin():
            self.set_header("Access-Control-Allow-Origin", self.allowed_origin())
            self.set_header("Vary", "Origin")

    def allowed_origin(self) -> str:
        """What Access-Control-Allow-Origin says to this request's Origin: "" (nothing) unless the deployer named it."""
        service = getattr(self, "service", None)  # (tornado asks for the default headers before initialize)
        origin, allowed = self.request.headers.get("Origin"), service.limits.cors if service else ()
        return ("*" if "*" in allowed else origin) if origin and ("*" in allowed or origin in allowed) else ""

    def prepare(self):
        if self.request.method == "OPTIONS":
            return
        if self.token:
            self.authorize()
        if self.limited:
            self.limit_rate()

    def authorize(self) -> None:
        token = self.service.limits.token
        if not token:
            return
        given = self.request.headers.get("Authorization", "")
        if not (given[:7].lower() == "bearer " and hmac.compare_digest(given[7:].strip().encode(), token.encode())):
            raise Refused(401, "This API needs its token: send the header `Authorization: Bearer <token>` "
                          "(ask the site's owner for the token).",
                          **{"WWW-Authenticate": 'Bearer realm="bear_classifier"'})

    def limit_rate(self) -> None:
        wait = self.rate.take(client_address(self.request))
        if wait:
            raise Refused(429, f"Too many requests from your address (the limit is {self.rate.per_minute} a "
                          f"minute). Please try again in {wait} s.", **{"Retry-After": str(wait)})

    def unavailable(self, error: Unavailable) -> Refused:
        """503 while the model loads (come back in a few seconds), or where it could not be loaded (no use to)."""
        loading = not self.service.model.loaded.done()
        return Refused(503, str(error), **({"Retry-After": "5"} if loading else {}))

    def options(self, *args) -> None:
        """A browser's preflight: allowed only for the origins the deployer named (BEAR_API_CORS)."""
        if not self.allowed_origin():
            raise Refused(403, "This API takes no calls from other sites' web pages (its owner can allow some: "
                          "BEAR_API_CORS).")
        self.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
        self.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type")
        self.set_header("Access-Control-Max-Age", "600")
        self.set_status(204)

    def on_finish(self) -> None:
        metrics.api_request(self.get_status())

    def write_json(self, body: dict, status: int = 200) -> None:
        self.set_status(status)
        self.finish(json.dumps(body, ensure_ascii=False))  # "40×16 pixels" as written, for a person reading curl

    def write_error(self, status_code: int, **kwargs) -> None:
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, Refused):
            sentence = error.sentence
            for name, value in error.headers.items():
                self.set_header(name, value)
        elif status_code == 405:
            sentence = f"{self.request.method} is not how this address is used: see {base_url(self)}api/docs."
        elif status_code < 500:
            sentence = f"This request could not be read ({self._reason}). See {base_url(self)}api/docs."
        else:
            sentence = "Something went wrong on the server. Please try again; if it goes on, tell the site's owner."
        self.finish(json.dumps({"error": sentence}, ensure_ascii=False))


@web.stream_request_body
class Classify(Api):
    """POST /api/classify: one image as the body, or several as multipart/form-data files; ?heatmap=1 adds each map."""

    async def prepare(self):
        self._body: bytearray | None = None
        self._address: str | None = None  # the client's, once admitted: its place is given back when it ends
        self._held = 0  # bytes of its body counted against the server's budget
        self._refusal: Refused | None = None
        if self.request.method != "POST":
            return
        limit = self.service.limits.max_bytes
        length = self.request.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > limit:
            raise self._too_large(int(length))  # at once, and its connection closed: such a body is never read
        # A body without a length (chunked) is refused once it grows past the limit: tornado closes its connection
        # at twice that, unread; a slow one's too, once the body has taken BEAR_API_BODY_SECONDS.
        self.request.connection.set_max_body_size(2 * limit)
        self.request.connection.set_body_timeout(self.service.limits.body_seconds)
        try:
            super().prepare()  # the token, the rate
            kind = self.request.headers.get("Content-Type", "").split(";")[0].strip().lower()
            if kind != "multipart/form-data" and not any(kind.startswith(t) for t in RAW_TYPES if t) and kind:
                raise Refused(415, f"The API reads images, not {kind}. {SEND}")
            if not self.service.admit(client_address(self.request)):
                raise self._busy()
        except Refused as refusal:
            # Said once the body has come, dropped as it comes (it holds no place and no memory): most clients send
            # their whole body before they read an answer, and would see a closed connection instead of this one.
            self._refusal = refusal
            return
        self._address = client_address(self.request)
        self._body = bytearray()

    def _busy(self) -> Refused:
        wait = self.service.retry_after()
        return Refused(503, f"The server is busy classifying other images. Please try again in {wait} s.",
                       **{"Retry-After": str(wait)})

    def data_received(self, chunk: bytes) -> None:
        if self._body is None:
            return
        if len(self._body) + len(chunk) > self.service.limits.max_bytes:  # said at once: the body may never end
            self._body = None  # the rest is dropped as it comes
            self.send_error(413, exc_info=(Refused, self._too_large(None), None))
        elif not self.service.hold(len(chunk)):  # the bodies the server holds are at their budget: said at the end
            self._refusal, self._body = self._busy(), None
            self.service.drop(self._held)
            self._held = 0
        else:
            self._body += chunk
            self._held += len(chunk)

    def on_finish(self) -> None:
        super().on_finish()
        self._leave()

    def on_connection_close(self) -> None:
        """The client went away (or tornado closed a slow or oversized body's connection): its place is free."""
        self._leave()

    def _leave(self) -> None:
        if self._address is not None:
            self.service.leave(self._address, self._held)
            self._address, self._held, self._body = None, 0, None

    def _too_large(self, size: int | None) -> Refused:
        """413 for a body of `size` bytes (None: one without a length, refused as it grew past the limit)."""
        limit = f"{self.service.limits.max_bytes / 2**20:g} MB"
        said = f"{size / 2**20:.1f} MB; the limit is {limit}" if size else f"over the limit of {limit}"
        return Refused(413, f"The request is too large ({said} for all of its images together). Please send "
                            "smaller photos, or fewer at once.")

    def images(self) -> list[tuple[str, bytes]]:
        """The request's images as (name, bytes), within the limit on their number."""
        kind = self.request.headers.get("Content-Type", "")
        if kind.split(";")[0].strip().lower() == "multipart/form-data":
            fields: dict = {}
            files: dict = {}
            try:
                httputil.parse_body_arguments(kind, bytes(self._body), fields, files, self.request.headers)
            except httputil.HTTPInputError as e:
                why = str(e).removeprefix("Invalid multipart/form-data: ")  # tornado's own words start so
                raise Refused(400, f"There is no image in this request: its multipart/form-data could not be read "
                                   f"({why}). {SEND}") from None
            for name, values in fields.items():  # ?heatmap=1 may come as a form field too
                self.request.arguments.setdefault(name, []).extend(values)
            found = [(f.filename[:200] or "image", f.body) for parts in files.values() for f in parts]
            self._body = None  # its parts are copies
        elif self._body or kind.lower().startswith(("image/", "application/octet-stream")):  # a file said to be sent:
            # if empty, the page's "empty" sentence below
            found = [(self.get_query_argument("name", "image")[:200], self._body)]  # read as it is: no copy
        else:  # nothing sent at all
            found = []
        if not found:
            raise Refused(400, f"There is no image in this request. {SEND}")
        most = self.service.limits.max_images
        if len(found) > most:
            raise Refused(413, f"Too many images in one request ({len(found)}; the limit is {most}). "
                          "Please send the others in another request.")
        return found

    async def post(self) -> None:
        if self._finished:  # refused while its body came (too large)
            return
        if self._refusal is not None:
            raise self._refusal
        images = self.images()
        heatmap = self.get_argument("heatmap", "").lower() in ("1", "true", "yes", "on")
        try:
            results = await self.service.classify(images, heatmap)
        except Busy as e:
            raise Refused(503, str(e), **{"Retry-After": str(e.retry_after)}) from None
        except Unavailable as e:
            raise self.unavailable(e) from None
        answered = [r for r in results if "error" not in r]
        if answered:
            self.write_json({"results": results})
        else:  # nothing could be classified: the first file's sentence says why
            self.write_json({"error": results[0]["error"], "results": results}, 422)


class ModelInfo(Api):
    """GET /api/model: the classes in the page's words, the model card's figures, the version."""

    def get(self) -> None:
        try:
            self.write_json(self.service.info())
        except Unavailable as e:
            raise self.unavailable(e) from None


class Health(Api):
    """GET /api/health: the server is up and its event loop answers (it does nothing else: a liveness probe)."""

    def get(self) -> None:
        self.write_json({"status": "ok"})


class Ready(Api):
    """GET /api/ready: 200 once the model is loaded (a readiness probe), else 503 with why."""

    def get(self) -> None:
        try:
            self.service.model.classifier()
        except Unavailable as e:
            raise self.unavailable(e) from None
        self.write_json({"status": "ready", "model": self.service.model.version()})
