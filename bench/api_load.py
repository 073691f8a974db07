"""Load for bench/api.py: N callers classify photos in a loop for S seconds, each waiting for its answer before
sending the next, and the figures come back as one JSON line. Two kinds of caller:

  http  a plain asyncio HTTP/1.1 client, one keep-alive connection per caller (no library between the bench and
        the wire): this project's POST /api/classify with the photo as the body; Gradio's documented curl flow
        (POST /gradio_api/upload, POST /gradio_api/call/<name>, GET the result's event stream)
  own   each server's own Python client, one per caller thread: bear_classifier.Client; gradio_client.Client

Run in a subprocess by bench/api.py, under the Python whose client it needs (gradio_client lives only in the
bench environment):  python -m bench.api_load {api,gradio} {http,own} URL --concurrency 8 --seconds 30 PHOTO...
"""
from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

GRADIO_ENDPOINT = "classify"  # bench/gradio_app.py's function name


class Connection:
    """One keep-alive HTTP/1.1 connection; reopened after an error or a `Connection: close`."""

    def __init__(self, host: str, port: int):
        self.host, self.port, self.reader, self.writer = host, port, None, None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict | None = None):
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}", f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        try:
            status = int((await self.reader.readline()).split()[1])
            fields = {}
            while (line := await self.reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                fields[name.strip().lower()] = value.strip()
            if "content-length" in fields:
                data = await self.reader.readexactly(int(fields["content-length"]))
            elif fields.get("transfer-encoding") == "chunked":
                data = b""
                while size := int((await self.reader.readline()).split(b";")[0], 16):
                    data += await self.reader.readexactly(size + 2)
                    data = data[:-2]
                await self.reader.readline()
            else:
                data = await self.reader.read()
                fields["connection"] = "close"
        except Exception:
            self.close()
            raise
        if fields.get("connection", "").lower() == "close":
            self.close()
        return status, data

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


def multipart(name: str, data: bytes) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


async def api_call(conn: Connection, name: str, data: bytes) -> bool:
    status, body = await conn.request("POST", "/api/classify", data, {"Content-Type": "application/octet-stream"})
    return status == 200 and bool(json.loads(body))


async def gradio_call(conn: Connection, name: str, data: bytes) -> bool:
    body, kind = multipart(name, data)
    status, paths = await conn.request("POST", "/gradio_api/upload", body, {"Content-Type": kind})
    if status != 200:
        return False
    call = json.dumps({"data": [{"path": json.loads(paths)[0], "meta": {"_type": "gradio.FileData"}}]}).encode()
    status, event = await conn.request("POST", f"/gradio_api/call/{GRADIO_ENDPOINT}", call,
                                       {"Content-Type": "application/json"})
    if status != 200:
        return False
    status, stream = await conn.request("GET", f"/gradio_api/call/{GRADIO_ENDPOINT}/{json.loads(event)['event_id']}")
    return status == 200 and b"event: complete" in stream


async def http_load(server: str, url: str, photos: list[tuple[str, bytes]], concurrency: int, seconds: float):
    split = urlsplit(url)
    call = api_call if server == "api" else gradio_call
    latencies, errors = [], []
    deadline = time.perf_counter() + seconds

    async def caller(i: int) -> None:
        conn = Connection(split.hostname, split.port)
        n = i
        while time.perf_counter() < deadline:
            name, data = photos[n % len(photos)]
            n += concurrency
            start, why = time.perf_counter(), "a bad answer"
            try:
                ok = await call(conn, name, data)
            except Exception as e:
                ok, why, conn = False, f"{type(e).__name__}: {e}", Connection(split.hostname, split.port)
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(why)
        conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return latencies, errors, time.perf_counter() - start


def own_load(server: str, url: str, photos: list[tuple[str, Path]], concurrency: int, seconds: float):
    if server == "api":
        from bear_classifier import Client

        def make():
            return Client(url)

        def call(client, path):
            return client.classify(path)
    else:
        from gradio_client import Client, handle_file

        def make():
            return Client(url, verbose=False)

        def call(client, path):
            return client.predict(handle_file(str(path)), api_name=f"/{GRADIO_ENDPOINT}")
    clients = [make() for _ in range(concurrency)]  # made before the clock starts: Gradio's fetches its config
    latencies, errors, lock = [], [], threading.Lock()
    start_all = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def caller(i: int) -> None:
        start_all.wait()
        n = i
        while time.perf_counter() < deadline[0]:
            path = photos[n % len(photos)][1]
            n += concurrency
            start = time.perf_counter()
            try:
                ok, why = bool(call(clients[i], path)), "an empty answer"
            except Exception as e:
                ok, why = False, f"{type(e).__name__}: {e}"[:200]
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start if ok else why)

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    deadline[0] = start + seconds
    start_all.wait()
    for t in threads:
        t.join()
    return latencies, errors, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("server", choices=["api", "gradio"])
    p.add_argument("client", choices=["http", "own"])
    p.add_argument("url")
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--seconds", type=float, default=30)
    args = p.parse_args()
    if args.client == "http":
        photos = [(path.name, path.read_bytes()) for path in args.photos]
        latencies, errors, elapsed = asyncio.run(http_load(args.server, args.url, photos, args.concurrency,
                                                           args.seconds))
    else:
        latencies, errors, elapsed = own_load(args.server, args.url, [(p.name, p) for p in args.photos],
                                              args.concurrency, args.seconds)
    print(json.dumps({"latencies": latencies, "errors": errors[:5], "n_errors": len(errors), "seconds": elapsed}))


if __name__ == "__main__":
    main()
