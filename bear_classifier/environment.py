"""Every setting the package reads from the environment, in one place: what a deployer can set without touching the
code (docs/deploy.md). Each is read when asked for, so a test or a notebook can change it between calls."""
from __future__ import annotations

import os
from pathlib import Path

OFF = ("off", "0", "false", "no")


def _number(name: str, default: float, what: str) -> float:
    value = os.environ.get(name, "").strip()
    try:
        number = float(value) if value else default
    except ValueError:
        raise ValueError(f"{name}={value!r} is not a number: give {what}.") from None
    if number < 0:
        raise ValueError(f"{name}={value!r} is negative: give {what}.")
    return number


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
    SQLite file BEAR_FEEDBACK_DB, else `default_db` (feedback_file)."""
    return os.environ.get("BEAR_FEEDBACK_URL") or f"sqlite:///{feedback_file(default_db)}"


def feedback_file(default_db: Path) -> Path | None:
    """The store's SQLite file (BEAR_FEEDBACK_DB, else `default_db`); None where BEAR_FEEDBACK_URL names a database."""
    return None if os.environ.get("BEAR_FEEDBACK_URL") else Path(os.environ.get("BEAR_FEEDBACK_DB") or default_db)


def feedback_named() -> bool:
    """A store is named (BEAR_FEEDBACK_URL or BEAR_FEEDBACK_DB), and storing is on."""
    return feedback_on() and bool(os.environ.get("BEAR_FEEDBACK_URL") or os.environ.get("BEAR_FEEDBACK_DB"))


def feedback_max_mb(default: float) -> float:
    """BEAR_FEEDBACK_MAX_MB: how many MB of photos the store may hold."""
    return _number("BEAR_FEEDBACK_MAX_MB", default, "a number of megabytes, for example 500")


def trusted_proxies() -> str:
    """BEAR_TRUSTED_PROXIES: comma-separated networks whose X-Forwarded-For is believed (a cluster's pod network)."""
    return os.environ.get("BEAR_TRUSTED_PROXIES", "")


def models_folder() -> Path | None:
    """BEAR_MODELS: the models folder (models/<version>/export.onnx, and `served`, the pointer to the one served);
    `models promote` and `rollback` switch running servers. BEAR_MODEL, a fixed file, wins where both are set."""
    value = os.environ.get("BEAR_MODELS")
    return Path(value) if value else None


def answers_days(default: float) -> float:
    """BEAR_ANSWERS_DAYS: how many days the answers log (class, probability, version: never a photo) keeps a row."""
    days = _number("BEAR_ANSWERS_DAYS", default, "a number of days, for example 30")
    if not days <= 36_500:  # a century at most (and not nan): older dates than that can't be computed
        raise ValueError(f"BEAR_ANSWERS_DAYS={days!r} is too many days: give at most 36500 (BEAR_ANSWERS_ROWS bounds "
                         f"the log's size).")
    return days


def answers_rows(default: int) -> int:
    """BEAR_ANSWERS_ROWS: the most rows the answers log keeps of the page's answers, and of the API's: their newest."""
    value = os.environ.get("BEAR_ANSWERS_ROWS", "").strip()
    try:
        rows = int(value) if value else default
    except ValueError:
        rows = 0
    if not 1 <= rows <= 2**62:
        raise ValueError(f"BEAR_ANSWERS_ROWS={value!r} is not a whole number of rows: give one, for example 1000000.")
    return rows


def api_on() -> bool:
    """BEAR_API=off serves the page alone: no HTTP API, and no model session in the server process (about 105 MiB)."""
    return os.environ.get("BEAR_API", "on").strip().lower() not in OFF


def api_token() -> str:
    """BEAR_API_TOKEN: when set, the HTTP API answers only requests with `Authorization: Bearer <this token>`."""
    return os.environ.get("BEAR_API_TOKEN", "").strip()


def api_max_mb() -> float:
    """BEAR_API_MAX_MB: the largest request body the API reads, in MB (all of a request's images together)."""
    return _number("BEAR_API_MAX_MB", 20, "a size in megabytes, for example 20")


def api_max_images() -> int:
    """BEAR_API_MAX_IMAGES: how many images one request may carry."""
    return max(1, int(_number("BEAR_API_MAX_IMAGES", 8, "a count of images, for example 8")))


def api_per_minute() -> int:
    """BEAR_API_PER_MINUTE: requests one client address may make per minute (0: no limit)."""
    return int(_number("BEAR_API_PER_MINUTE", 120, "a count of requests, for example 120; 0 for no limit"))


def api_concurrent() -> int:
    """BEAR_API_CONCURRENT: requests classified at once (0: one per core); others wait their turn."""
    return int(_number("BEAR_API_CONCURRENT", 0, "a count of requests, for example 2; 0 for one per core"))


def api_queue() -> int:
    """BEAR_API_QUEUE: requests that may wait for a turn; more are refused at once with 503 and Retry-After."""
    return int(_number("BEAR_API_QUEUE", 64, "a count of requests, for example 64"))


def api_wait_seconds() -> float:
    """BEAR_API_WAIT_SECONDS: how long a request may wait for its turn before it gets 503 and Retry-After."""
    return _number("BEAR_API_WAIT_SECONDS", 10, "seconds, for example 10")


def api_body_seconds() -> float:
    """BEAR_API_BODY_SECONDS: how long a request's body may take to arrive; a slower one's connection is closed."""
    return _number("BEAR_API_BODY_SECONDS", 60, "seconds, for example 60")


def api_cors_origins() -> list[str]:
    """BEAR_API_CORS: comma-separated origins whose web pages may call the API (`*`: any); empty: none (the default)."""
    return [o.strip() for o in os.environ.get("BEAR_API_CORS", "").split(",") if o.strip()]


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
    return int(_number("BEAR_MONITOR_DAYS", default, "a number of days, for example 30"))
