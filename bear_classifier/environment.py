"""Every setting the package reads from the environment, in one place: what a deployer can set without touching the
code (docs/deploy.md). Each is read when asked for, so a test or a notebook can change it between calls."""
from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "0", "false", "no")


def model_path() -> Path | None:
    """BEAR_MODEL: the model the page, the API of the CLI and the kernel serve (export.onnx, or export.pkl for the
    lesson's load_learner); None: export.onnx beside the notebook, else the checkout's."""
    value = os.environ.get("BEAR_MODEL")
    return Path(value) if value else None


def examples_folder() -> Path | None:
    """BEAR_EXAMPLES: the folder of photos the page offers to try; None: examples/ beside the notebook."""
    value = os.environ.get("BEAR_EXAMPLES")
    return Path(value) if value else None


def feedback_on() -> bool:
    """BEAR_FEEDBACK=off turns "That's wrong" off: nothing a visitor gives the page is stored."""
    return os.environ.get("BEAR_FEEDBACK", "on").strip().lower() not in OFF


def feedback_url(default_db: Path) -> str:
    """BEAR_FEEDBACK_URL: the store's database URL (postgresql+psycopg://... where replicas share it); else the
    SQLite file BEAR_FEEDBACK_DB, else `default_db`."""
    return os.environ.get("BEAR_FEEDBACK_URL") or f"sqlite:///{os.environ.get('BEAR_FEEDBACK_DB') or default_db}"


def feedback_max_mb(default: float) -> float:
    """BEAR_FEEDBACK_MAX_MB: how many MB of photos the store may hold."""
    value = os.environ.get("BEAR_FEEDBACK_MAX_MB")
    try:
        return float(value) if value else default
    except ValueError:
        raise ValueError(f"BEAR_FEEDBACK_MAX_MB={value!r} is not a number of megabytes (for example 500)") from None


def trusted_proxies() -> str:
    """BEAR_TRUSTED_PROXIES: comma-separated networks whose X-Forwarded-For is believed (a cluster's pod network)."""
    return os.environ.get("BEAR_TRUSTED_PROXIES", "")


def metrics_on() -> bool:
    """BEAR_METRICS=off: no /metrics route, and the page and the API count nothing (docs/production.md)."""
    return os.environ.get("BEAR_METRICS", "on").strip().lower() not in OFF


def metrics_dir() -> Path | None:
    """BEAR_METRICS_DIR: where the server makes its folder of counts (prometheus_client's multiprocess files);
    None: the system's temporary folder. In a container, a volume of its own (an emptyDir) or tmpfs."""
    value = os.environ.get("BEAR_METRICS_DIR")
    return Path(value) if value else None


def monitor_days(default: int) -> int:
    """BEAR_MONITOR_DAYS: how many days of answers the monitor page shows."""
    value = os.environ.get("BEAR_MONITOR_DAYS")
    try:
        return int(value) if value else default
    except ValueError:
        raise ValueError(f"BEAR_MONITOR_DAYS={value!r} is not a number of days (for example 30)") from None
