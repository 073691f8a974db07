"""The Python client of the HTTP API: `Client("http://host:8866").classify("photo.jpg")`. The standard library only
(urllib), so that calling a server needs nothing installed beyond this package."""
from __future__ import annotations

import json
import logging
import os
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .. import environment

log = logging.getLogger(__name__)

RETRIED = (429, 503)  # busy, or this address asked too often: both say when to come back (Retry-After)


class ApiError(RuntimeError):
    """The server refused the request, or could not be reached; str(error) says why and what to do."""

    def __init__(self, sentence: str, status: int | None = None, body: dict | None = None):
        super().__init__(sentence)
        self.status, self.body = status, body or {}


@dataclass
class Answer:
    """One image's answer, as the page gives it: str(answer) is the lesson's line, as the local `predict` prints it."""

    name: str
    label: str
    words: str
    probability: float
    probabilities: dict[str, float]
    none_of_these: bool
    model: dict = field(default_factory=dict)  # the model's version: name, sha256 and date
    heatmap_png: bytes | None = None  # where the model looked, a grayscale PNG (classify(..., heatmap=True))
    person: str = ""  # where a "none of these" photo is mainly a person, the page's sentence for it

    @classmethod
    def from_json(cls, d: dict) -> "Answer":
        import base64

        heat = d.get("heatmap_png")
        return cls(d["name"], d["label"], d["words"], d["probability"], d["probabilities"], d["none_of_these"],
                   d.get("model", {}), base64.b64decode(heat) if heat else None, d.get("person", ""))

    def __str__(self) -> str:
        return f"Prediction: {self.label}; Probability: {self.probability:.4f}"


Photo = str | os.PathLike | bytes


class Client:
    """Calls one server's API. Waits and tries again when it is busy (503) or asks to slow down (429), as long as
    Retry-After says, `retries` times at most; any other refusal is an ApiError with the server's sentence."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 60.0, retries: int = 5,
                 backoff: float = 0.5):
        if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"{url!r} is not a server's address: give one like http://localhost:8866")
        self.url = url.rstrip("/") + "/"
        self.token = environment.api_token() if token is None else token
        self.timeout, self.retries, self.backoff = timeout, retries, backoff

    def classify(self, photo: Photo, heatmap: bool = False) -> Answer:
        """The answer for one photo (a path or its bytes); ApiError with the page's sentence for a file that isn't one."""
        name, data = _read(photo)
        query = urllib.parse.urlencode({"name": name, **({"heatmap": 1} if heatmap else {})})
        body = self._call("POST", f"api/classify?{query}", data, "application/octet-stream")
        result = body["results"][0]
        if "error" in result:
            raise ApiError(result["error"], 422, body)
        return Answer.from_json(result)

    def classify_many(self, photos: list[Photo], heatmap: bool = False) -> list[Answer | ApiError]:
        """The answers for several photos in one request (the server's limit: 8 by default), in order; a file that
        isn't a photo gets an ApiError in its place."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, data in map(_read, photos):
            safe = name.replace('"', "'").replace("\r", " ").replace("\n", " ")
            parts += [f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{safe}\"\r\n"
                      "Content-Type: application/octet-stream\r\n\r\n".encode(), data, b"\r\n"]
        parts.append(f"--{boundary}--\r\n".encode())
        body = self._call("POST", "api/classify" + ("?heatmap=1" if heatmap else ""), b"".join(parts),
                          f"multipart/form-data; boundary={boundary}", refused_ok=True)
        return [ApiError(r["error"], 422) if "error" in r else Answer.from_json(r) for r in body["results"]]

    def model(self) -> dict:
        """The served model: its classes in the page's words, its model card's figures, its version."""
        return self._call("GET", "api/model")

    def ready(self) -> bool:
        """Whether the server's model is loaded (it answers at once, never waits)."""
        try:
            self._call("GET", "api/ready", retry=False)
            return True
        except ApiError as e:
            if e.status is None:
                raise
            return False

    def _limit(self) -> int | None:
        """The most bytes the server takes in one request (its /api/model says), or None if it doesn't answer."""
        try:
            return int(self._call("GET", "api/model", retry=False)["limits"]["max_bytes"])
        except (ApiError, KeyError, TypeError, ValueError):
            return None

    def _call(self, method: str, path: str, data: bytes | None = None, kind: str | None = None,
              retry: bool = True, refused_ok: bool = False) -> dict:
        url = self.url + path
        headers = {"Accept": "application/json", **({"Content-Type": kind} if kind else {}),
                   **({"Authorization": f"Bearer {self.token}"} if self.token else {})}
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, method=method, headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())
            except urllib.error.HTTPError as e:
                body = _json(e)
                if refused_ok and e.code == 422 and "results" in body:
                    return body  # every file was refused: each says why
                if retry and e.code in RETRIED and attempt < self.retries:
                    wait = _seconds(e.headers.get("Retry-After"), self.backoff * 2 ** attempt)
                    log.info("%s answered %d; trying again in %.1f s", url, e.code, wait)
                    time.sleep(wait)
                    continue
                raise ApiError(body.get("error") or f"{url} answered {e.code} {e.reason}.", e.code, body) from None
            except TimeoutError:
                raise ApiError(f"{self.url} did not answer within {self.timeout:g} s. Try again later, or give the "
                               "client a longer timeout.") from None
            except (urllib.error.URLError, OSError) as e:
                why = getattr(e, "reason", e)
                if data and isinstance(why, (BrokenPipeError, ConnectionResetError)) and (most := self._limit()):
                    # The server is up but closed the connection while the body was still on its way: it refused
                    # its size at once (413), an answer urllib can't read once its own sending has failed.
                    raise ApiError(f"The server closed the connection while the request ({len(data) / 2**20:.1f} MB)"
                                   f" was on its way: it takes {most / 2**20:g} MB at most. Please send "
                                   "smaller photos, or fewer at once.", 413) from None
                raise ApiError(f"Could not reach {self.url} ({why}). Is the server running, and is this its address? "
                               "(make app serves http://localhost:8866)") from None
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _read(photo: Photo) -> tuple[str, bytes]:
    if isinstance(photo, (bytes, bytearray)):
        return "image", bytes(photo)
    return Path(photo).name, Path(photo).read_bytes()


def _json(error: urllib.error.HTTPError) -> dict:
    try:
        body = json.loads(error.read())
        return body if isinstance(body, dict) else {}
    except (ValueError, OSError):
        return {}


def _seconds(retry_after: str | None, fallback: float, most: float = 60.0) -> float:
    """Retry-After's seconds (never past `most`), or the backoff where the server gave none."""
    try:
        return min(most, max(0.0, float(retry_after)))
    except (TypeError, ValueError):
        return min(most, fallback)
