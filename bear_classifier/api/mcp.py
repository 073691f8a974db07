"""The classifier as tools for AI assistants (the Model Context Protocol): classify_image, explain_image and
model_info, over stdio or streamable HTTP, answering with the served model here or through a server's HTTP API."""
from __future__ import annotations

import base64
import binascii
import logging
import math
from pathlib import Path
from typing import Any, Protocol

from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from ..inference.images import MAX_BYTES, ImageError, check_size

log = logging.getLogger(__name__)

# A photo the page takes (20 MB) must fit in one request once base64 makes it a third larger.
MAX_BODY = math.ceil(MAX_BYTES * 4 / 3) + 64 * 1024
INSTRUCTIONS = ("Tools that say which of the model's classes a photo shows (or none of them), how sure it is, and "
                "where in the photo it looked. Call model_info to learn the classes.")


class Answers(Protocol):
    """Where the answers come from: the served model in this process, or a server's HTTP API (api.client)."""

    def classify(self, data: bytes) -> dict[str, Any]: ...
    def explain(self, data: bytes) -> tuple[dict[str, Any], bytes]: ...
    def model(self) -> dict[str, Any]: ...


def photo_bytes(path: str | None, image_base64: str | None, read_files: bool = True) -> bytes:
    """The photo's bytes from a file path or from base64 (a data: URL too); a ToolError with a sentence otherwise."""
    if (path is None) == (image_base64 is None):
        raise ToolError("Give the photo in one of two ways: `path` (a file on the computer this server runs on) or "
                        "`image_base64` (its bytes, base64-encoded).")
    if path is not None:
        if not read_files:  # a remote caller must not learn what files this server has, or what they are
            raise ToolError("This server does not read files from its own disk: send the photo's bytes as "
                            "`image_base64` instead of `path`.")
        return read_photo(Path(path).expanduser())
    text = "".join(image_base64.split())
    if text.startswith("data:"):  # data:image/jpeg;base64,/9j/...
        text = text.partition(",")[2]
    try:
        check_size(len(text) * 3 // 4)
        return base64.b64decode(text, validate=True)
    except ImageError as e:
        raise ToolError(str(e)) from None
    except (binascii.Error, ValueError):
        raise ToolError("`image_base64` is not valid base64. Send the photo's bytes base64-encoded (A-Z, a-z, 0-9, "
                        "+ and /), or a data: URL.") from None


def read_photo(path: Path) -> bytes:
    try:
        if path.is_dir():
            raise ToolError(f"{path} is a folder, not a photo: give the path of one photo in it.")
        check_size(path.stat().st_size)  # before reading it: a 4 GB file is refused, not loaded
        return path.read_bytes()
    except FileNotFoundError:
        raise ToolError(f"There is no file at {path}. Check the path: it is read on the computer this server "
                        f"runs on (an absolute path is safest).") from None
    except PermissionError:
        raise ToolError(f"{path} can't be read (permission denied): copy the photo somewhere readable.") from None
    except ImageError as e:
        raise ToolError(str(e)) from None
    except OSError as e:
        raise ToolError(f"{path} can't be read ({e.strerror}).") from None


def make_server(answers: Answers, read_files: bool = True) -> MCPServer:
    """The MCP server with its three tools. `read_files=False` (over HTTP) accepts base64 only."""
    server = MCPServer("bear-classifier", instructions=INSTRUCTIONS)

    def answer_or_sentence(call, *args):
        try:
            return call(*args)
        except ImageError as e:  # a bad photo: the page's own sentence, never a traceback
            raise ToolError(str(e)) from None

    @server.tool()
    def classify_image(path: str | None = None, image_base64: str | None = None) -> dict[str, Any]:
        """Say which class the photo shows, or that it is none of them, and how sure the model is.

        Give the photo as `path` (a file on the computer this server runs on) or `image_base64`. Returns the label,
        its words, its probability, every class's probability, whether it is "none of these", and the model's
        version."""
        return answer_or_sentence(answers.classify, photo_bytes(path, image_base64, read_files))

    @server.tool()
    def explain_image(path: str | None = None, image_base64: str | None = None) -> list:
        """Show where in the photo the model looked for its answer: a PNG of the photo, bright where the evidence
        for the answer was, dark elsewhere; with the answer itself. Give the photo as for classify_image."""
        answer, png = answer_or_sentence(answers.explain, photo_bytes(path, image_base64, read_files))
        if not png:  # "none of these" has no class to show evidence for
            return [f"{answer['name']}: there is no class whose evidence to show.", answer]
        return [Image(data=png, format="png"), answer]

    @server.tool()
    def model_info() -> dict[str, Any]:
        """The model's classes with their words, its version (sha256 and date) and its measured figures."""
        return answers.model()

    return server


class LocalAnswers:
    """The served model, loaded in this process."""

    def __init__(self, model: Path | None = None, threads: int = 1):
        from ..inference.predict import Classifier, read_card, served_model_path

        self.path = Path(model or served_model_path())
        self.clf = Classifier.load(self.path, threads=threads)
        self.card = read_card(self.path)

    def _answer(self, data: bytes):
        from ..inference.images import open_image

        img = open_image(data, min_side=max(self.clf.size))
        pred = self.clf.predict(img)
        c = self.clf.classes
        return img, pred, {"label": pred.label, "name": c.name(pred.label), "probability": pred.probability,
                           "probabilities": pred.probs, "none_of_these": not pred.in_set,
                           "model": {"sha256": self.clf.sha256}}

    def classify(self, data: bytes) -> dict[str, Any]:
        return self._answer(data)[2]

    def explain(self, data: bytes) -> tuple[dict[str, Any], bytes]:
        import io

        from ..inference.heatmap import heatmap_image, overlay

        img, pred, answer = self._answer(data)
        if not pred.in_set:
            return answer, b""
        img.thumbnail((448, 448))
        buf = io.BytesIO()
        overlay(img, heatmap_image(pred.heatmap, img.size)).save(buf, format="PNG")
        return answer, buf.getvalue()

    def model(self) -> dict[str, Any]:
        c = self.clf.classes
        return {"classes": [{"label": label, "name": c.name(label)} for label in c.vocab],
                "none_label": c.none_label, "model": {"sha256": self.clf.sha256}}


def serve(url: str | None = None, model: Path | None = None, http: bool = False, host: str = "127.0.0.1",
          port: int = 8867) -> None:
    """Run the MCP server until stopped: over stdio (an assistant starts it), or streamable HTTP at /mcp."""
    import os

    answers = RemoteAnswers(url) if url else LocalAnswers(model, threads=os.cpu_count() or 1)
    server = make_server(answers, read_files=not http)
    if not http:
        server.run("stdio")
        return
    # Stateless, with JSON answers: any replica can take any call, so no session affinity is needed behind a proxy.
    server.run("streamable-http", host=host, port=port, stateless_http=True, json_response=True,
               max_request_body_size=MAX_BODY)
