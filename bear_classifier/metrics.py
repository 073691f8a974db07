"""What the serving processes count for Prometheus: answers, rejected uploads, corrections, API requests.

The page answers in its visitors' kernels, each a process of its own, so the counts are kept as prometheus_client's
multiprocess mode keeps them: every process writes its own file in the folder PROMETHEUS_MULTIPROC_DIR names,
which the Jupyter server makes at start and hands to the kernels it starts, and sums them when Prometheus asks
(server/metrics.py). In a process without that folder (a notebook, a test) the counts stay in memory. Labels are
the model's own words (its classes, its version) and a few fixed reasons: never a photo, a file name or an address.
"""
from __future__ import annotations

import functools
import os
import threading
from types import SimpleNamespace

from . import environment

# Why an upload got a sentence instead of an answer (inference.images.ImageError.reason, and the page's own).
REASONS = ("empty", "too_large", "too_many_pixels", "too_small", "not_an_image", "damaged", "too_many_at_once",
           "model_unavailable", "failed")


_made = threading.Lock()  # functools.cache alone may run counts() twice at once, and the second would fail


def counts() -> SimpleNamespace:
    with _made:
        return _counts()


@functools.cache
def _counts() -> SimpleNamespace:
    """The counters, made at the first count (or at `counts()`, to pay prometheus_client's 65 ms import before it):
    by then the server has named its folder, whichever module imported this one first."""
    from prometheus_client import Counter, Histogram, values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR") and not values.ValueClass._multiprocess:
        # The Jupyter server imports prometheus_client (for its own request metrics) before its folder exists, so the
        # library chose in-memory values there: the server's own counts (its API) go to the folder, as the kernels'.
        values.ValueClass = values.MultiProcessValue()
    return SimpleNamespace(
        answers=Counter("bear_answers", "Photos answered, by answer (a class, or the none-of-these label) and model "
                        "version", ["answer", "version"]),
        none_of_these=Counter("bear_none_of_these", "Photos answered 'none of these', by model version", ["version"]),
        probability=Histogram("bear_answer_probability", "The probability the page states with each answer",
                              ["answer", "version"], buckets=(.3, .4, .5, .6, .7, .8, .9, .95, .99, 1.0)),
        seconds=Histogram("bear_answer_seconds", "From a photo's arrival in its kernel (or the API) to its answer, "
                          "seconds", ["version"], buckets=(.05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10, 30)),
        rejected=Counter("bear_rejected_uploads", "Uploads that got a sentence instead of an answer, by reason",
                         ["reason"]),
        corrections=Counter("bear_corrections", "\"That's wrong\" corrections stored, by what the model answered, "
                            "what the visitor said it is, and the model version", ["answered", "corrected", "version"]),
        api_requests=Counter("bear_api_requests", "HTTP API requests, by status code", ["status"]),
    )


def answered(answer: str, probability: float, version: str, seconds: float, none_of_these: bool) -> None:
    """One answer, on the page or the API: call it once per answer, where the answer is given."""
    if not environment.metrics_on():
        return
    c = counts()
    c.answers.labels(answer, version).inc()
    if none_of_these:
        c.none_of_these.labels(version).inc()
    c.probability.labels(answer, version).observe(probability)
    c.seconds.labels(version).observe(seconds)


def rejected(reason: str) -> None:
    """One upload refused with a sentence; `reason` one of REASONS (anything else counts as "failed")."""
    if environment.metrics_on():
        counts().rejected.labels(reason if reason in REASONS else "failed").inc()


def corrected(answered: str, corrected: str, version: str) -> None:
    """One correction stored (a visitor's change of mind about the same card is not counted again)."""
    if environment.metrics_on():
        counts().corrections.labels(answered, corrected, version).inc()


def api_request(status: int) -> None:
    """One HTTP API request answered with `status`."""
    if environment.metrics_on():
        counts().api_requests.labels(str(int(status))).inc()
