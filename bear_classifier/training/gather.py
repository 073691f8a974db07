"""Gather training images from the web: image search (DuckDuckGo via `ddgs`) plus a careful downloader."""
from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from ..inference.images import ImageError, open_image

USER_AGENT = "Mozilla/5.0 (bear_classifier image gatherer)"
MAX_DOWNLOAD = 10 * 1024 * 1024  # bytes; larger answers are not photos worth having


def search_images(query: str, max_images: int = 150) -> list[str]:
    """Image URLs for `query` from DuckDuckGo (the lesson used Bing, whose API is gone)."""
    from ddgs import DDGS

    return [r["image"] for r in DDGS().images(query, max_results=max_images) if r.get("image")]


@dataclass
class Result:
    url: str
    path: Path | None = None
    error: str | None = None


def fetch(url: str, timeout: float = 10.0, max_bytes: int = MAX_DOWNLOAD) -> bytes:
    """GET `url`, refusing non-images and bodies over `max_bytes` without reading them whole."""
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        ctype = resp.headers.get("Content-Type", "")
        if ctype and not ctype.startswith(("image/", "application/octet-stream", "binary/")):
            raise ValueError(f"not an image ({ctype.split(';')[0]})")
        if int(resp.headers.get("Content-Length") or 0) > max_bytes:
            raise ValueError("too large")
        data = resp.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise ValueError("too large")
    return data


def download_image(url: str, dest: Path, timeout: float = 10.0, retries: int = 2,
                   max_bytes: int = MAX_DOWNLOAD) -> Result:
    """Download one image into dest/<sha256[:16]>.jpg; never raises, reports the failure instead.

    The name is the hash of the content, so re-running a gather never stores a photo twice.
    Only transient failures (timeouts, 5xx, dropped connections) are retried.
    """
    for attempt in range(retries + 1):
        try:
            data = fetch(url, timeout, max_bytes)
            img = open_image(data)
            path = dest / f"{hashlib.sha256(data).hexdigest()[:16]}.jpg"
            if not path.exists():
                img.save(path, quality=92)
            return Result(url, path)
        except urllib.error.HTTPError as e:
            error = f"HTTP {e.code}"
            if e.code < 500:
                break
        except (ImageError, ValueError) as e:
            error = str(e)
            break
        except Exception as e:  # timeouts, resets, DNS: worth another try
            error = f"{type(e).__name__}: {e}"
        time.sleep(0.5 * 2**attempt)
    return Result(url, error=error)


def download_images(urls: list[str], dest: Path, workers: int = 8, timeout: float = 10.0,
                    retries: int = 2, max_bytes: int = MAX_DOWNLOAD, progress: bool = True) -> list[Result]:
    """Download `urls` in parallel into `dest`, with a progress bar; failures are skipped and reported."""
    from fastprogress.fastprogress import progress_bar

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        futures = [pool.submit(download_image, u, dest, timeout, retries, max_bytes) for u in dict.fromkeys(urls)]
        done = as_completed(futures)
        results = [f.result() for f in (progress_bar(done, total=len(futures)) if progress else done)]
    return results


def gather(root: Path, classes, per_class: int = 150, search=search_images, **kwargs) -> dict[str, list[Result]]:
    """Search (each class's `Kind.search` query) and download `per_class` images for every class of
    `classes` (classes.Classes) into root/<label>/."""
    return {kind.label: download_images(search(kind.search, per_class), Path(root) / kind.label, **kwargs)
            for kind in classes.kinds}
