"""The MCP server (`python -m bear_classifier mcp`) through the `mcp` SDK's own client: over stdio, as an assistant
starts it, and over streamable HTTP, as a server runs it; real photos through the real model."""
from __future__ import annotations

import base64
import io
import os
import sys
import urllib.error
import urllib.request
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from browser import free_port, serve
from conftest import ROOT

EXAMPLES = ROOT / "examples"
TEXT_SENTENCE = "This file is a text file, not an image. Please upload a photo (JPEG, PNG, WebP, HEIC...)."
TIMEOUT = 120  # seconds for a whole test: the model loads once per server


def run(test) -> None:
    """Run an async test body with a deadline, so a server that never answers fails the test instead of hanging it."""
    async def bounded():
        with anyio.fail_after(TIMEOUT):
            await test()
    anyio.run(bounded)


def stdio(*args: str) -> Client:
    """The server as an assistant's config starts it: a command, run from the checkout."""
    return Client(StdioServerParameters(command=sys.executable, args=["-m", "bear_classifier", "mcp", *args],
                                        cwd=str(ROOT)))


TOKEN = "a-token-the-deployer-chose"


@asynccontextmanager
async def over_http(tmp_path):
    """`mcp --http` with the API's token set, and the SDK's client that sends it."""
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    port = free_port()
    cmd = [sys.executable, "-m", "bear_classifier", "mcp", "--http", "--port", str(port)]
    env = {**os.environ, "BEAR_API_TOKEN": TOKEN}
    with serve(cmd, port, "/mcp", ROOT, tmp_path / "mcp.log", env) as (url, _log, _proc):
        # without the token: refused, in a sentence
        request = urllib.request.Request(f"{url}/mcp", b"{}", {"Content-Type": "application/json"}, method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 401 and b"Authorization: Bearer" in refused.value.read()
        http = create_mcp_http_client(headers={"Authorization": f"Bearer {TOKEN}"})
        async with http, Client(streamable_http_client(f"{url}/mcp", http_client=http)) as client:
            yield client


def text(result) -> str:
    return " ".join(block.text for block in result.content if block.type == "text")


def as_base64(name: str) -> str:
    return base64.b64encode((EXAMPLES / name).read_bytes()).decode()


async def check_tools(client: Client, photo: dict, text_file: dict) -> None:
    """What every transport must do: list the three tools, classify a grizzly, show where it looked, and answer a
    text file with the page's own sentence."""
    tools = {tool.name: tool for tool in (await client.list_tools()).tools}
    assert set(tools) == {"classify_image", "explain_image", "model_info"}
    assert {"path", "image_base64"} <= set(tools["classify_image"].input_schema["properties"])

    result = await client.call_tool("classify_image", photo)
    assert not result.is_error, text(result)
    answer = result.structured_content
    assert answer["label"] == "grizzly" and answer["words"] == "Grizzly bear" and answer["probability"] > 0.8
    assert set(answer["probabilities"]) == {"black", "grizzly", "teddy", "not_bear"}
    assert abs(sum(answer["probabilities"].values()) - 1) < 1e-4 and answer["none_of_these"] is False
    assert len(answer["model"]["sha256"]) == 64 and "heatmap_png" not in answer
    assert answer["name"] == (Path(photo["path"]).name if "path" in photo else "image")  # as the API names it
    assert "person" not in answer  # the API's answer has the field only with its sentence

    result = await client.call_tool("explain_image", photo)
    assert not result.is_error, text(result)
    [picture] = [block for block in result.content if block.type == "image"]
    assert picture.mime_type == "image/png"
    png = Image.open(io.BytesIO(base64.b64decode(picture.data)))
    assert png.format == "PNG" and min(png.size) > 100
    assert "grizzly" in text(result)

    result = await client.call_tool("classify_image", text_file)
    assert result.is_error and TEXT_SENTENCE in text(result)
    assert "Traceback" not in text(result)

    info = (await client.call_tool("model_info", {})).structured_content
    assert [c["label"] for c in info["classes"]] == ["black", "grizzly", "teddy"]
    assert info["none_of_these"]["label"] == "not_bear" and info["version"] == answer["model"]


def test_stdio_classifies_a_photo_by_path_and_answers_a_text_file_with_a_sentence():
    async def body():
        async with stdio() as client:
            await check_tools(client, {"path": str(EXAMPLES / "grizzly.jpg")}, {"path": str(ROOT / "README.md")})
            # The other ways a photo can be wrong, each in a sentence that says what to do.
            missing = await client.call_tool("classify_image", {"path": str(ROOT / "no-such-photo.jpg")})
            assert missing.is_error and "There is no file at" in text(missing)
            bad = await client.call_tool("classify_image", {"image_base64": "not base64 at all!"})
            assert bad.is_error and "is not valid base64" in text(bad)
            neither = await client.call_tool("classify_image", {})
            assert neither.is_error and "Give the photo" in text(neither)
            # and the server still answers after them
            black = await client.call_tool("classify_image", {"image_base64": as_base64("black-bear.jpg")})
            assert black.structured_content["label"] == "black"
    run(body)


def test_streamable_http_asks_for_the_token_takes_base64_photos_and_never_reads_its_own_files(tmp_path):
    async def body():
        async with over_http(tmp_path) as client:
            text_file = base64.b64encode(b"name,label\ngrizzly.jpg,grizzly\n").decode()
            await check_tools(client, {"image_base64": as_base64("grizzly.jpg")}, {"image_base64": text_file})
            # a caller elsewhere must not learn which files this server has, or what they are
            refused = await client.call_tool("classify_image", {"path": str(EXAMPLES / "grizzly.jpg")})
            assert refused.is_error and "send the photo's bytes as `image_base64`" in text(refused)
    run(body)


def test_stdio_with_url_answers_through_the_pages_server(tmp_path):
    """`mcp --url`: the same tools, answered by the HTTP API of a running page server (here `voila app.ipynb`)."""
    from browser import voila

    async def body(url: str):
        async with stdio("--url", url) as client:
            await check_tools(client, {"path": str(EXAMPLES / "grizzly.jpg")}, {"path": str(ROOT / "README.md")})

    with voila(log=tmp_path / "voila.log") as (url, _log, _proc):
        run(lambda: body(url))


def test_what_is_not_a_photo_is_refused_in_a_sentence_before_anything_reads_it(tmp_path):
    from mcp.server.mcpserver.exceptions import ToolError

    from bear_classifier.api.mcp import photo_bytes

    with pytest.raises(ToolError, match=r"The file is too large \(2[0-9.]+ MB; the limit is 20 MB\)"):
        photo_bytes(None, "A" * 30_000_000)  # refused by its length, not decoded
    with pytest.raises(ToolError, match="is a folder, not a photo"):
        photo_bytes(str(tmp_path), None)
    with pytest.raises(ToolError, match="Give the photo in one of two ways"):
        photo_bytes("a.jpg", "AAAA")
    grizzly = (EXAMPLES / "grizzly.jpg").read_bytes()
    assert photo_bytes(None, "data:image/jpeg;base64," + base64.b64encode(grizzly).decode()) == grizzly
