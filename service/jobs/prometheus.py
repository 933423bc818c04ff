"""corral as Prometheus sees it: every figure read at scrape time, in the text format.

Nothing here lives in process memory: counters and histograms of ended jobs come from Redis
(service.jobs.metrics), jobs queued and running from the database, queue depths from kombu's
lists, loaded models and workers from the fleet's keys. So any API process (any gunicorn
worker, on any host) answers the same scrape, and prometheus_client's multiprocess mode,
which adds up per-process files on one host, is not needed.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from service.jobs import fleet
from service.jobs.metrics import COUNTERS, HISTOGRAMS, JobMeter
from service.jobs.queue import JobQueue, priority_band
from service.jobs.records import JobStore

try:  # prometheus_client >= 0.22 names the formats; 0.0.4 is the one every Prometheus reads
    from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4 as CONTENT_TYPE
except ImportError:  # pragma: no cover - older prometheus_client
    from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

__all__ = ["CONTENT_TYPE", "CorralCollector", "exposition"]

_COUNTER_HELP = {
    "jobs": ("corral_jobs_finished", "Jobs that reached a final state (succeeded, failed, "
             "cancelled), by model, kind and status"),
    "generated_tokens": ("corral_generated_tokens", "Tokens generated (eval_count) by "
                         "ended jobs, by model"),
    "prompt_tokens": ("corral_prompt_tokens", "Prompt tokens evaluated (prompt_eval_count) "
                      "by ended jobs, by model"),
}
_HISTOGRAM_HELP = {
    "request_latency": ("corral_request_latency_seconds", "Seconds from a job's creation "
                        "(request accepted) to its end, by model and kind"),
    "first_token_latency": ("corral_first_token_latency_seconds", "Seconds from a job's "
                            "creation to its first generated token, by model"),
}


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


class CorralCollector:
    """A prometheus_client collector over corral's shared state, read afresh each scrape.

    `queues` are the queues the API sends to (CORRAL_QUEUES); each worker's own queues,
    as the fleet lists them, are added, and every queue's batch twin.
    """

    def __init__(self, meter: JobMeter, jobs: JobStore, queue: JobQueue,
                 queues: list[str]) -> None:
        self.meter = meter
        self.jobs = jobs
        self.queue = queue
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        yield from self._counters()
        yield from self._histograms()
        yield self._unfinished()
        workers = fleet.workers(self.queue.redis)
        yield self._depths(workers)
        yield self._loaded()
        yield from self._workers(workers)

    def _counters(self) -> Iterator[Metric]:
        for family, labels in COUNTERS.items():
            name, text = _COUNTER_HELP[family]
            metric = CounterMetricFamily(name, text, labels=labels)
            for values, total in sorted(self.meter.counters(family).items()):
                metric.add_metric(values, total)
            yield metric

    def _histograms(self) -> Iterator[Metric]:
        for family, labels in HISTOGRAMS.items():
            name, text = _HISTOGRAM_HELP[family]
            metric = HistogramMetricFamily(name, text, labels=labels)
            for values, seen in sorted(self.meter.histograms(family).items()):
                metric.add_metric(values, [(_bound(b), n) for b, n in seen.buckets], seen.sum)
            yield metric

    def _unfinished(self) -> Metric:
        metric = GaugeMetricFamily("corral_jobs", "Jobs queued and running now (finished "
                                   "ones are counted by corral_jobs_finished_total)",
                                   labels=["status"])
        for status, count in self.jobs.unfinished().items():
            metric.add_metric([status], count)
        return metric

    def _depths(self, workers: list[dict]) -> Metric:
        names = list(dict.fromkeys(
            [q for name in self.queues for q in (name, f"{name}.batch")]
            + [q for w in workers for q in w.get("queues") or [] if isinstance(q, str)]))
        metric = GaugeMetricFamily(
            "corral_queue_depth", "Messages waiting on a Celery queue by the corral priority "
            "band of kombu's list (8-9 is taken first); held by no worker yet",
            labels=["queue", "priority"])
        for queue, lengths in self.queue.levels(names).items():
            bands: dict[str, int] = {}
            for level, length in enumerate(lengths):
                band = priority_band(level)
                bands[band] = bands.get(band, 0) + length
            for band, length in bands.items():
                metric.add_metric([queue, band], length)
        return metric

    def _loaded(self) -> Metric:
        metric = GaugeMetricFamily("corral_model_loaded", "1 for each model loaded on a live "
                                   "worker", labels=["model", "worker"])
        for entry in fleet.loaded(self.queue.redis):
            metric.add_metric([str(entry.get("name")), str(entry.get("worker"))], 1)
        return metric

    def _workers(self, workers: list[dict]) -> Iterator[Metric]:
        count = GaugeMetricFamily("corral_workers", "Workers heard from lately: alive, or "
                                  "silent (dead) for up to a grace period", labels=["state"])
        alive = [w for w in workers if w.get("alive")]
        count.add_metric(["alive"], len(alive))
        count.add_metric(["dead"], len(workers) - len(alive))
        yield count
        labels = ["worker", "host"]
        slots = GaugeMetricFamily("corral_worker_slots", "Decode slots of a live worker",
                                  labels=labels)
        free = GaugeMetricFamily("corral_worker_free_slots", "Decode slots of a live worker "
                                 "that hold no job", labels=labels)
        for w in alive:
            who = [str(w["worker"]), str(w.get("host", ""))]
            slots.add_metric(who, float(w.get("slots") or 0))
            free.add_metric(who, float(w.get("free_slots") or 0))
        yield slots
        yield free


def exposition(collector: CorralCollector) -> bytes:
    """One scrape's body in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
