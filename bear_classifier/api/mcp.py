"""The classifier as tools for AI assistants (the Model Context Protocol): classify_image, explain_image and
model_info, over stdio or streamable HTTP, answered by the API's service here or by a server's HTTP API (--url)."""
from __future__ import annotations

import base64
import binascii
import dataclasses
import io
import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from mcp.server.mcpserver import Image, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .. import __version__, environment
from ..inference.images import MAX_BYTES, ImageError, check_size
from .client import ApiError, Client
from .service import Busy, Model, Service, Unavailable

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

log = logging.getLogger(__name__)

# A photo the page takes (20 MB) must fit in one request once base64 makes it a third larger.
MAX_BODY = math.ceil(MAX_BYTES * 4 / 3) + 64 * 1024
INSTRUCTIONS = ("Tools that say which of the model's classes a photo shows (or none of them), how sure it is, and "
                "where in the photo it looked. model_info names the classes.")


class Answers(Protocol):
    """Where answers come from: the API's service in this process (Local), or a server's HTTP API (Remote).
    Both raise ToolError with a sentence for a photo they can't answer."""

    async def classify(self, data: bytes, name: str = "image", heatmap: bool = False) -> dict[str, Any]: ...
    async def info(self) -> dict[str, Any]: ...


class Local:
    """The served model, loaded in this process behind the API's own service (its turns and queue)."""

    def __init__(self, model: Path | None = None):
        # Its answers join the answers log only where a store is named: an assistant starts this server in a folder
        # of its own choosing (often /), where a feedback.db would be nobody's.
        self.service = Service(model=Model(model), log_answers=environment.feedback_named())
        self.service.model.loaded.result()  # wait for it (or raise ModelError): a call never meets "still loading"

    async def classify(self, data: bytes, name: str = "image", heatmap: bool = False) -> dict[str, Any]:
        try:
            [out] = await self.service.classify([(name, data)], heatmap)
        except (Busy, Unavailable) as e:
            raise ToolError(str(e)) from None
        if "error" in out:
            raise ToolError(out["error"])
        return out

    async def info(self) -> dict[str, Any]:
        return self.service.info()


class Remote:
    """A server's HTTP API, through the Python client (which waits and tries again while the server is busy)."""

    def __init__(self, url: str):
        self.client = Client(url)

    async def classify(self, data: bytes, name: str = "image", heatmap: bool = False) -> dict[str, Any]:
        try:
            answer = await anyio.to_thread.run_sync(lambda: self.client.classify(data, heatmap=heatmap))
        except ApiError as e:
            raise ToolError(str(e)) from None
        out = {**dataclasses.asdict(answer), "name": name}  # the JSON the server sent, as Local gives it
        if not out["person"]:  # the API leaves out an empty person sentence
            del out["person"]
        heat = out.pop("heatmap_png")
        return {**out, "heatmap_png": base64.b64encode(heat).decode("ascii")} if heat else out

    async def info(self) -> dict[str, Any]:
        try:
            return await anyio.to_thread.run_sync(self.client.model)
        except ApiError as e:
            raise ToolError(str(e)) from None


def photo_name(path: str | None) -> str:
    """The answer's `name`: the file's, else "image" (as the API names a photo sent as the body)."""
    return Path(path).name[:200] if path else "image"


def photo_bytes(path: str | None, image_base64: str | None, read_files: bool = True) -> bytes:
    """The photo's bytes from a file path or from base64 (a data: URL too); a ToolError with a sentence otherwise."""
    if (path is None) == (image_base64 is None):
        raise ToolError("Give the photo in one of two ways: `path` (a file on the computer this server runs on) or "
                        "`image_base64` (its bytes, base64-encoded).")
    if path is not None:
        if not read_files:  # a caller elsewhere must not learn which files this server has, or what they are
            raise ToolError("This server does not read files from its own disk: send the photo's bytes as "
                            "`image_base64` instead of `path`.")
        return read_file(Path(path).expanduser())
    text = "".join(image_base64.split())
    if text.startswith("data:"):  # data:image/jpeg;base64,/9j/...
        text = text.partition(",")[2]
    try:
        check_size(len(text) * 3 // 4)  # before decoding it
        return base64.b64decode(text, validate=True)
    except ImageError as e:
        raise ToolError(str(e)) from None
    except (binascii.Error, ValueError):
        raise ToolError("`image_base64` is not valid base64. Send the photo's bytes base64-encoded (A-Z, a-z, 0-9, "
                        "+ and /), or a data: URL.") from None


def read_file(path: Path) -> bytes:
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


def lit_where_it_looked(data: bytes, heatmap_png: str) -> bytes:
    """The page's "Where it looked" as a PNG: the photo (at most 448 px) bright where the evidence was, dark elsewhere."""
    from PIL import Image as PILImage

    from ..inference.answer import read_photo
    from ..inference.heatmap import overlay

    img = read_photo(data)
    img.thumbnail((448, 448))
    heat = PILImage.open(io.BytesIO(base64.b64decode(heatmap_png)))
    buf = io.BytesIO()
    overlay(img, heat).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def make_server(answers: Answers, read_files: bool = True) -> MCPServer:
    """The MCP server with its three tools. `read_files=False` (over HTTP): photos come as base64 only."""
    server = MCPServer("bear-classifier", instructions=INSTRUCTIONS, version=__version__, log_level="WARNING")

    @server.tool()
    async def classify_image(path: str | None = None, image_base64: str | None = None) -> dict[str, Any]:
        """Say which class the photo shows, or that it is none of them, and how sure the model is.

        Give the photo as `path` (a file on the computer this server runs on) or `image_base64`. Returns the label,
        its words, its probability, every class's probability, whether it is "none of these", and the model's
        version (sha256 and date)."""
        return await answers.classify(photo_bytes(path, image_base64, read_files), photo_name(path))

    @server.tool(structured_output=False)
    async def explain_image(path: str | None = None, image_base64: str | None = None) -> list:
        """Show where in the photo the model looked: a PNG of the photo, bright where the evidence for its answer
        was and dark where there was none, with the answer itself. Give the photo as for classify_image."""
        data = photo_bytes(path, image_base64, read_files)
        answer = await answers.classify(data, photo_name(path), heatmap=True)
        heatmap = answer.pop("heatmap_png", None)
        if answer["none_of_these"] or not heatmap:  # as on the page: no class, so no evidence for one to show
            return [f"{answer['words']}: there is no class whose evidence to show.", answer]
        words = answer["words"]
        return [Image(data=lit_where_it_looked(data, heatmap), format="png"),
                f"Bright: what made it say \u201c{words}\u201d; dark: what it ignored.", answer]

    @server.tool()
    async def model_info() -> dict[str, Any]:
        """The model's classes in words, what it says for a photo of none of them, its measured figures and its
        version (sha256 and date)."""
        return await answers.info()

    return server


def serve(url: str | None = None, model: Path | None = None, http: bool = False, host: str = "127.0.0.1",
          port: int = 8867) -> None:
    """Run the MCP server until stopped: over stdio (an assistant starts it), or streamable HTTP at /mcp."""
    server = make_server(Remote(url) if url else Local(model), read_files=not http)
    if not http:
        server.run("stdio")
        return
    import uvicorn

    # Stateless, with JSON answers: any replica can take any call, so no affinity is needed behind a proxy.
    app = server.streamable_http_app(stateless_http=True, json_response=True, max_request_body_size=MAX_BODY,
                                     host=host)
    uvicorn.run(with_token(app), host=host, port=port, log_level="warning")


def with_token(app: ASGIApp) -> ASGIApp:
    """The API's bearer token (BEAR_API_TOKEN), asked of every MCP request too where the deployer has set one."""
    import hmac

    from .. import environment

    token = environment.api_token()
    if not token:
        return app
    expected = f"Bearer {token}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            given = dict(scope["headers"]).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                body = b'{"error": "This server needs its token: send the header Authorization: Bearer <token>."}'
                await send({"type": "http.response.start", "status": 401, "headers": [
                    (b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": body})
                return
        await app(scope, receive, send)

    return guarded
