"""Prometheus metrics: every metric tierwise exposes is defined here, on one
:class:`Metrics` per app (its own ``CollectorRegistry``, built by ``tierwise.app.create_app``,
never at import, so two apps in one process never collide).

Three kinds of figure, read three ways:

- **Counted in memory, on the hot path**: decisions and outcomes are tallied in plain dicts
  (one ``+= 1`` per decision, no lock, no label lookup) and turned into counters when scraped.
  Money stays exact until then: costs are summed in integer nano-USD (:mod:`router.money`) and
  shown in USD only in the scrape. Gateway latency and time to first token are prometheus-client
  histograms (observed once per call, off the route path).
- **Read from live objects when scraped**: the batch writer's buffered rows, the spool's depth
  (a hook, :meth:`Metrics.watch_spool`), the job scheduler's runs and lag.
- **Read from the database when scraped** (:meth:`Metrics.refresh`, awaited by ``GET /metrics``
  before the text is rendered): samples by status, grading spend, escalation events. These
  are the whole deployment's figures (grading runs in ``tierwise worker`` processes, which
  serve no HTTP), the same on every replica: aggregate them with ``max``, not ``sum``.

Every metric, with its labels (``_total`` counters per process since start; gauges as read):

====================================================  =====================================
``tierwise_decisions_total``                          task_class, model: decisions made
``tierwise_decisions_sampled_total``                  task_class: of which sampled
``tierwise_outcomes_total``                           source (api, gateway), status
``tierwise_outcome_cost_usd_total``                   source: cost of the stored outcomes
``tierwise_gateway_request_duration_seconds``         status: histogram, whole gateway call
``tierwise_gateway_time_to_first_token_seconds``      histogram, streamed calls
``tierwise_upstream_errors_total``                    model, kind (429, 5xx, 4xx, timeout,
                                                      connection, other)
``tierwise_gateway_fallbacks_total``                  from_model: moved on to the next model
``tierwise_writer_buffered_rows``                     gauge: rows waiting in the batch writer
``tierwise_spool_rows``                               gauge: rows in the disk spool (if any)
``tierwise_job_runs_total``                           job, result (ok, error)
``tierwise_job_last_success_timestamp_seconds``       job: Unix time of the last good run
``tierwise_job_lag_seconds``                          job: how late the job is (0 on time)
``tierwise_samples``                                  status: samples in the database
``tierwise_grading_spend_usd``                        task_class: grades' cost, all time
``tierwise_escalation_events``                        task_class, to_status: events stored
====================================================  =====================================
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlmodel.ext.asyncio.session import AsyncSession

from router.money import usd

if TYPE_CHECKING:
    from router.outcomes import OutcomeReport, OutcomeResult

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The Prometheus text exposition format's media type."""

LATENCY_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0)
"""Gateway call durations, s: LLM calls take from tens of ms to minutes."""
TTFT_BUCKETS_S = (0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
"""Time to first streamed token, s."""


class JobStats(Protocol):
    """What :class:`Metrics` reads of the job scheduler (``router.jobs.JobScheduler``)."""

    def job_stats(self) -> Iterable[tuple[str, float, Counter[str], float | None, float]]:
        """Per job: name, interval (s), runs by result (``ok``, ``error``), Unix time of the
        last good run (None before one), Unix time the scheduler started."""
        ...


# The evaluator's tables as lightweight clauses: the data plane imports nothing of evaluator/.
_sample = sa.table("sample", sa.column("status"))
_grade = sa.table("grade", sa.column("task_class"), sa.column("cost_nusd"))
_escalation = sa.table("escalation_event", sa.column("task_class"), sa.column("to_status"))


def _upstream_error_kind(status: int | None, error: str | None) -> str:
    """An upstream attempt's failure as a low-cardinality label."""
    if status == 429:
        return "429"
    if status is not None:
        return "5xx" if status >= 500 else "4xx"
    text = (error or "").lower()
    if "no reply within" in text or "timeout" in text or "timed out" in text:
        return "timeout"
    if "connect" in text:
        return "connection"
    return "other"


class Metrics:
    """One app's metrics (module doc). Call sites use the one-line methods below; ``GET
    /metrics`` awaits :meth:`refresh` and renders :meth:`render`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self._decisions: Counter[tuple[str, str]] = Counter()
        self._sampled: Counter[str] = Counter()
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._cost_nusd: Counter[str] = Counter()
        self._upstream_errors: Counter[tuple[str, str]] = Counter()
        self._fallbacks: Counter[str] = Counter()
        self._writer_depth: Callable[[], int] | None = None
        self._spool_depth: Callable[[], int] | None = None
        self._jobs: JobStats | None = None
        self._stored: list[Metric] = []
        self.gateway_duration = Histogram(
            "tierwise_gateway_request_duration_seconds",
            "Gateway calls, from the request to the recorded outcome (streams: to the last "
            "chunk), by outcome status",
            ["status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.gateway_ttft = Histogram(
            "tierwise_gateway_time_to_first_token_seconds",
            "Streamed gateway calls: time from the request to the first chunk",
            buckets=TTFT_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_Collector(self))

    # ---- the call sites' one-liners ---------------------------------------------------------
    def decided(self, task_class: str, model: str, sampled: bool) -> None:
        """A decision was handed to the writer."""
        self._decisions[task_class, model] += 1
        if sampled:
            self._sampled[task_class] += 1

    def outcome(self, source: str, status: str, cost_nusd: int | None) -> None:
        """One outcome stored (``source``: ``api`` or ``gateway``); cost nano-USD, None =
        unpriced."""
        self._outcomes[source, status] += 1
        if cost_nusd is not None:
            self._cost_nusd[source] += cost_nusd

    def outcomes_reported(
        self, reports: Sequence[OutcomeReport], results: Sequence[OutcomeResult]
    ) -> None:
        """``POST /v1/outcomes``: the reports stored (duplicates are not counted again)."""
        for report, result in zip(reports, results, strict=True):
            if result.stored:
                self.outcome("api", report.status, result.cost_nusd)

    def gateway_call(
        self,
        status: str,
        duration_s: float,
        ttft_s: float | None,
        attempts: Sequence[dict[str, Any]],
    ) -> None:
        """A gateway call ended (``router.gateway.service.Gateway``): its duration, time to
        first token, each failed upstream attempt by kind, and each move to the next model."""
        self.gateway_duration.labels(status).observe(duration_s)
        if ttft_s is not None:
            self.gateway_ttft.observe(ttft_s)
        last = len(attempts) - 1
        for i, attempt in enumerate(attempts):
            if attempt["status"] != "error":
                continue
            kind = _upstream_error_kind(attempt.get("upstream_status"), attempt.get("error"))
            self._upstream_errors[attempt["model"], kind] += 1
            if i < last:
                self._fallbacks[attempt["model"]] += 1

    def watch_writer(self, depth: Callable[[], int]) -> None:
        """Read the batch writer's buffered rows from ``depth()`` when scraped."""
        self._writer_depth = depth

    def watch_spool(self, depth: Callable[[], int]) -> None:
        """Read the disk spool's rows from ``depth()`` when scraped (``tierwise_spool_rows``;
        absent until a spool is watched)."""
        self._spool_depth = depth

    def watch_jobs(self, jobs: JobStats) -> None:
        """Read job runs and lag from the scheduler when scraped."""
        self._jobs = jobs

    # ---- the scrape -------------------------------------------------------------------------
    async def refresh(self, session: AsyncSession) -> None:
        """Read the database's figures (three GROUP BY queries over indexed columns or the grade
        table) for the next :meth:`render`.

        Raises:
            DBAPIError | OSError: the database could not be reached (the last figures stay).
        """
        conn = await session.connection()
        samples = GaugeMetricFamily(
            "tierwise_samples", "Samples in the database, by status", labels=["status"]
        )
        for status, n in await conn.execute(
            sa.select(_sample.c.status, sa.func.count()).group_by(_sample.c.status)
        ):
            samples.add_metric([status], n)
        spend = GaugeMetricFamily(
            "tierwise_grading_spend_usd",
            "Grading spend stored in the database (grades' cost, shadow probes included), all "
            "time, USD",
            labels=["task_class"],
        )
        for task_class, nusd in await conn.execute(
            sa.select(_grade.c.task_class, sa.func.sum(_grade.c.cost_nusd)).group_by(
                _grade.c.task_class
            )
        ):
            spend.add_metric([task_class], usd(int(nusd or 0)) or 0.0)
        events = GaugeMetricFamily(
            "tierwise_escalation_events",
            "Routing-table changes stored (escalations, probation, de-escalations, operators' "
            "changes), by the status they moved the class to",
            labels=["task_class", "to_status"],
        )
        for task_class, to_status, n in await conn.execute(
            sa.select(_escalation.c.task_class, _escalation.c.to_status, sa.func.count()).group_by(
                _escalation.c.task_class, _escalation.c.to_status
            )
        ):
            events.add_metric([task_class, to_status], n)
        self._stored = [samples, spend, events]

    def forget_stored(self) -> None:
        """Leave the database's figures out of the next scrapes (it could not be read)."""
        self._stored = []

    def render(self) -> bytes:
        """The registry in Prometheus's text format."""
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """The figures counted in memory and read from live objects (:class:`_Collector`)."""
        decisions = CounterMetricFamily(
            "tierwise_decisions",
            "Routing decisions made by this process (route API and gateway)",
            labels=["task_class", "model"],
        )
        for (task_class, model), n in sorted(self._decisions.items()):
            decisions.add_metric([task_class, model], n)
        sampled = CounterMetricFamily(
            "tierwise_decisions_sampled",
            "Decisions sampled for grading",
            labels=["task_class"],
        )
        for task_class, n in sorted(self._sampled.items()):
            sampled.add_metric([task_class], n)
        outcomes = CounterMetricFamily(
            "tierwise_outcomes",
            "Outcomes stored, by source and status",
            labels=["source", "status"],
        )
        for (source, status), n in sorted(self._outcomes.items()):
            outcomes.add_metric([source, status], n)
        cost = CounterMetricFamily(
            "tierwise_outcome_cost_usd",
            "Serving cost of the stored outcomes (priced from the catalog), USD",
            labels=["source"],
        )
        for source, nusd in sorted(self._cost_nusd.items()):
            cost.add_metric([source], usd(nusd) or 0.0)
        errors = CounterMetricFamily(
            "tierwise_upstream_errors",
            "Failed upstream attempts of gateway calls, by model and kind",
            labels=["model", "kind"],
        )
        for (model, kind), n in sorted(self._upstream_errors.items()):
            errors.add_metric([model, kind], n)
        fallbacks = CounterMetricFamily(
            "tierwise_gateway_fallbacks",
            "Gateway calls that moved on from a failed model to the next of its chain",
            labels=["from_model"],
        )
        for model, n in sorted(self._fallbacks.items()):
            fallbacks.add_metric([model], n)
        yield from (decisions, sampled, outcomes, cost, errors, fallbacks)
        if self._writer_depth is not None:
            yield GaugeMetricFamily(
                "tierwise_writer_buffered_rows",
                "Rows waiting in the batch writer's buffer",
                value=self._writer_depth(),
            )
        if self._spool_depth is not None:
            yield GaugeMetricFamily(
                "tierwise_spool_rows", "Rows in the disk spool", value=self._spool_depth()
            )
        if self._jobs is not None:
            yield from _job_metrics(self._jobs, time.time())
        yield from self._stored


def _job_metrics(jobs: JobStats, now: float) -> Iterator[Metric]:
    runs = CounterMetricFamily(
        "tierwise_job_runs", "Scheduled job runs in this process", labels=["job", "result"]
    )
    last = GaugeMetricFamily(
        "tierwise_job_last_success_timestamp_seconds",
        "Unix time the job last ended without an error",
        labels=["job"],
    )
    lag = GaugeMetricFamily(
        "tierwise_job_lag_seconds",
        "How late the job is: time since its last good run (since the scheduler started, "
        "before one) less its interval, s; 0 while on time",
        labels=["job"],
    )
    for name, interval_s, results, last_ok, started in jobs.job_stats():
        for result in ("ok", "error"):
            runs.add_metric([name, result], results[result])
        if last_ok is not None:
            last.add_metric([name], last_ok)
        since = last_ok if last_ok is not None else started
        lag.add_metric([name], max(0.0, now - since - interval_s))
    yield from (runs, last, lag)


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self._metrics.collect()
