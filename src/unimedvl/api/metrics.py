"""The server's counters, gauges and histograms, written as Prometheus text for ``GET /metrics``.

Hand-written (a dict behind a lock per metric) because a single-process server needs none of
``prometheus_client``'s multiprocess machinery. The exposition rules that matter: one HELP and
TYPE line per name before its samples, label values escaped, cumulative histogram buckets ending
in ``+Inf`` (equal to ``_count``), and a newline after the last line.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Metric:
    kind = ""

    def __init__(self, name: str, help_text: str, labels: Sequence[str] = ()):
        self.name, self.help, self.labels = name, help_text, tuple(labels)
        self._lock = threading.Lock()
        self._values: dict[tuple[str, ...], object] = {}
        if not self.labels and self.kind != "histogram":
            self._values[()] = 0.0  # an unlabelled series exists from the start (0, not absent)

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {sorted(labels)}")
        return tuple(str(labels[n]) for n in self.labels)

    def _label_text(self, key: tuple[str, ...], extra: str = "") -> str:
        parts = [f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key)] + ([extra] if extra else [])
        return "{" + ",".join(parts) + "}" if parts else ""

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self._lock:
            items = sorted(self._values.items())
        for key, value in items:
            lines.extend(self._samples(key, value))
        return lines

    def _samples(self, key: tuple[str, ...], value) -> list[str]:
        return [f"{self.name}{self._label_text(key)} {_number(value)}"]


class Counter(_Metric):
    """A count that only goes up (name it ``*_total``)."""

    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        """Count ``amount`` more for the given label values."""
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        """The count so far for the given label values (0 when never counted)."""
        with self._lock:
            return float(self._values.get(self._key(labels), 0.0))


class Gauge(_Metric):
    """A value that goes up and down (queue depth)."""

    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        """Record the current value for the given label values."""
        with self._lock:
            self._values[self._key(labels)] = float(value)

    def value(self, **labels: str) -> float:
        """The last value set for the given label values (0 when never set)."""
        with self._lock:
            return float(self._values.get(self._key(labels), 0.0))


class Histogram(_Metric):
    """Observations counted into buckets, with their sum and count."""

    kind = "histogram"

    def __init__(self, name: str, help_text: str, buckets: Sequence[float], labels: Sequence[str] = ()):
        super().__init__(name, help_text, labels)
        self.buckets = tuple(sorted(buckets))

    def observe(self, value: float, **labels: str) -> None:
        """Count one observation into its bucket, the sum and the count."""
        key = self._key(labels)
        with self._lock:
            per_bucket, total, count = self._values.get(key, ((0,) * len(self.buckets), 0.0, 0))
            # Stored per bucket (a value above the last edge lands in +Inf only); cumulated when written.
            index = next((i for i, edge in enumerate(self.buckets) if value <= edge), None)
            if index is not None:
                per_bucket = per_bucket[:index] + (per_bucket[index] + 1,) + per_bucket[index + 1 :]
            self._values[key] = (per_bucket, total + value, count + 1)

    def count(self, **labels: str) -> int:
        """How many observations were made for the given label values."""
        with self._lock:
            return self._values.get(self._key(labels), ((), 0.0, 0))[2]

    def _samples(self, key: tuple[str, ...], value) -> list[str]:
        per_bucket, total, count = value
        lines, running = [], 0
        for edge, n in [*zip(self.buckets, per_bucket), (math.inf, 0)]:
            running += n
            le = 'le="' + _number(edge) + '"'
            lines.append(f"{self.name}_bucket{self._label_text(key, le)} {running if edge != math.inf else count}")
        lines.append(f"{self.name}_sum{self._label_text(key)} {_number(total)}")
        lines.append(f"{self.name}_count{self._label_text(key)} {count}")
        return lines


class Registry:
    """The metrics of one server, rendered together."""

    def __init__(self) -> None:
        self._metrics: list[_Metric] = []

    def add(self, metric: _Metric) -> _Metric:
        """Register ``metric`` (a name only once) and return it, so it can be assigned in one line."""
        if any(m.name == metric.name for m in self._metrics):
            raise ValueError(f"metric {metric.name} is registered twice")
        self._metrics.append(metric)
        return metric

    def render(self) -> str:
        """All metrics in the Prometheus text format."""
        lines = [line for metric in self._metrics for line in metric.render()]
        return "\n".join(lines) + "\n"


class ServerMetrics:
    """What ``GET /metrics`` reports: requests, latency, queue depth, batch sizes, cancellations."""

    def __init__(self) -> None:
        self.registry = Registry()
        add = self.registry.add
        self.requests = add(
            Counter("unimedvl_api_requests_total", "HTTP requests answered, by route and status.", ("route", "status"))
        )
        self.latency = add(
            Histogram(
                "unimedvl_api_request_seconds",
                "Time from request to the end of the answer.",
                LATENCY_BUCKETS,
                ("route",),
            )
        )
        self.queue_depth = add(Gauge("unimedvl_api_queue_depth", "Inference requests waiting for a batch."))
        self.running = add(Gauge("unimedvl_api_running", "Inference requests in the batch being served."))
        self.batch_size = add(
            Histogram(
                "unimedvl_api_batch_size", "Inference requests per Inferencer.run, by task.", BATCH_BUCKETS, ("task",)
            )
        )
        self.batch_seconds = add(
            Histogram("unimedvl_api_batch_seconds", "Time of one Inferencer.run, by task.", LATENCY_BUCKETS, ("task",))
        )
        self.rejected = add(Counter("unimedvl_api_rejected_total", "Requests refused because the queue was full."))
        self.cancelled = add(
            Counter(
                "unimedvl_api_cancelled_total",
                "HTTP requests whose client left before the answer (their work dropped or stopped).",
            )
        )
        self.tokens = add(Counter("unimedvl_api_generated_tokens_total", "Text tokens generated."))

    def render(self) -> str:
        """The body of ``GET /metrics`` (Prometheus text format)."""
        return self.registry.render()
