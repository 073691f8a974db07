"""/metrics: what this server and its visitors' kernels have counted, for Prometheus (docs/production.md).

The kernels count in prometheus_client's multiprocess mode (bear_classifier/metrics.py): at start the server
makes a folder of its own and names it in PROMETHEUS_MULTIPROC_DIR, which every kernel it starts inherits; a
scrape sums the folder's files, with what only the server knows: its kernels, a visitor's or preheated, and why
they ended. Kernels write counters and histograms only, whose counts must outlive them (a culled kernel's answers
still count): a scrape folds the files of processes that have ended into one archive (compact), so that it reads a
file per live kernel, not one per kernel that ever answered. The live values are the server's own.
"""
from __future__ import annotations

import atexit
import ipaddress
import logging
import os
import shutil
import tempfile
from pathlib import Path

from tornado import web

from .. import environment
from . import addresses
from .addresses import client_address

log = logging.getLogger(__name__)
PREFIX = "bear-metrics-"
ARCHIVE = "ended"  # in place of a process id: the archive of the counts of processes that have ended
REFUSED = ("The metrics are for the deployer's Prometheus: scrape this server's own address from this machine or "
           "from the networks in BEAR_TRUSTED_PROXIES, not through the proxy in front of it.")


def prepare() -> Path | None:
    """Make this server's folder of counts and name it in PROMETHEUS_MULTIPROC_DIR for the kernels it starts (called
    by the kernel manager as it starts, before the pool's first kernel); remove the folders of servers that ended
    without removing theirs (killed). None where BEAR_METRICS=off."""
    if not environment.metrics_on():
        return None
    base = _base()
    folder = base / f"{PREFIX}{os.getpid()}"
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") == str(folder):
        return folder  # already made, by this server
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(PREFIX + "*"):
        if not _alive(old.name[len(PREFIX):]):
            shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(folder, ignore_errors=True)  # counts are this run's alone (a server that had this pid before)
    folder.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    atexit.register(shutil.rmtree, folder, True)
    return folder


def _base() -> Path:
    return environment.metrics_dir() or Path(tempfile.gettempdir())


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def compact(folder: Path) -> int:
    """Fold the files of processes that have ended (kernels culled, closed) into one archive file per kind, the sums
    the library would have made of them, and mark those processes dead (the library's mark_process_dead, for any live
    gauge's file); how many files were folded. Without this, every scrape reads a file per kernel that ever answered:
    2.5 s for 3,000 kernels (docs/production.md), on the server's event loop."""
    from prometheus_client import multiprocess
    from prometheus_client.mmap_dict import MmapedDict

    ended = {path.stem.rpartition("_")[2] for path in folder.glob("*.db")}
    ended = {pid for pid in ended if pid.isdigit() and not _alive(pid)}
    folded = 0
    for pid in sorted(ended):
        for kind in ("counter", "histogram"):
            path = folder / f"{kind}_{pid}.db"
            if not path.exists():
                continue
            archive = MmapedDict(str(folder / f"{kind}_{ARCHIVE}.db"))
            try:
                for key, value, _timestamp, _position in MmapedDict.read_all_values_from_file(str(path)):
                    archive.write_value(key, archive.read_value(key)[0] + value, 0.0)
            finally:
                archive.close()
            path.unlink()
            folded += 1
        multiprocess.mark_process_dead(int(pid), str(folder))
    return folded


def handlers(prefix: str = "/") -> list[tuple[str, type]]:
    """The /metrics route under the server's `prefix`, for Visitors.get_handlers; none with BEAR_METRICS=off."""
    from jupyter_server.utils import url_path_join

    return [(url_path_join(prefix, "/metrics"), MetricsHandler)] if prepare() else []


def inside(request) -> bool:
    """A request straight from this machine or from a trusted network (where Prometheus runs), not one a proxy
    forwarded for a visitor: X-Forwarded-For from a trusted proxy names the visitor, and client_address believes it."""
    try:
        address = ipaddress.ip_address(client_address(request))
    except ValueError:
        return False
    return address.is_loopback or any(address in net for net in addresses.TRUSTED_PROXIES)


class Kernels:
    """A prometheus_client collector of the server's kernels: a visitor's, preheated, and ended, by why."""

    def __init__(self, kernels):
        self.kernels = kernels

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        live = [k for k in self.kernels.list_kernel_ids() if not self.kernels.has_ended(k)]
        busy = sum(self.kernels.owner(k) is not None for k in live)
        yield GaugeMetricFamily("bear_kernels_busy", "Kernels a visitor's page holds", value=busy)
        yield GaugeMetricFamily("bear_kernels_preheated", "Kernels started and waiting for a visitor",
                                value=len(live) - busy)
        ended = CounterMetricFamily("bear_kernels_ended", "Visitors' kernels ended, by why: idle (culled), crowded "
                                    "(their address held too many), closed (by their page)", labels=["why"])
        for why, n in sorted(self.kernels.ended_count.items()):
            ended.add_metric([why], n)
        yield ended


class MetricsHandler(web.RequestHandler):
    """Prometheus's text format: the kernels' and the server's counts, summed over the folder's files."""

    def get(self) -> None:
        from prometheus_client import CollectorRegistry, multiprocess
        from prometheus_client.exposition import choose_encoder

        if not inside(self.request):
            log.warning("Refused /metrics to %s: forwarded by a proxy.", client_address(self.request))
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.finish(REFUSED)
            return
        folder = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        compact(folder)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, str(folder))
        if hasattr(self.settings.get("kernel_manager"), "ended_count"):
            registry.register(Kernels(self.settings["kernel_manager"]))
        encode, content_type = choose_encoder(self.request.headers.get("Accept", ""))  # OpenMetrics to Prometheus
        self.set_header("Content-Type", content_type)
        self.set_header("Cache-Control", "no-store")
        self.finish(encode(registry))

    def compute_etag(self) -> None:  # counts change between scrapes: hashing them is wasted
        return None
