"""The core's `Metrics` port on prometheus-client, with a registry per process (tests build several)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from core.ports import Usage
from core.storage.statement_counter import StatementCounter

CONTENT_TYPE = CONTENT_TYPE_LATEST


class PrometheusMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.messages = Counter("lastresort_messages", "User messages taken in", ["platform"], registry=r)
        self.model_latency = Histogram(
            "lastresort_model_latency_seconds",
            "Time for one complete model reply",
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.tokens = Counter("lastresort_tokens", "Model tokens by kind", ["kind"], registry=r)
        # Each kind's child made once: `labels()` validates and locks on every call, and each answered message
        # counts six kinds.
        self._tokens = {
            kind: self.tokens.labels(kind=kind)
            for kind in ("input", "output", "cache_read", "cache_write", "review_input", "review_output")
        }
        self.events = Counter(
            "lastresort_audit_events", "Audit events by kind and reason", ["kind", "reason"], registry=r
        )
        self.errors = Counter("lastresort_errors", "Errors by kind", ["kind"], registry=r)
        self.deferred = Counter(
            "lastresort_messages_deferred",
            "Messages not stored yet, left for the platform (or a queue) to deliver again",
            ["platform", "reason"],
            registry=r,
        )
        self.redelivered = Counter(
            "lastresort_messages_redelivered", "Message deliveries that were redeliveries", ["platform"], registry=r
        )
        self.given_up = Counter(
            "lastresort_messages_given_up",
            "Messages lost: not stored, and nobody will deliver them again",
            ["platform", "reason"],
            registry=r,
        )
        self.reviews = Histogram(
            "lastresort_risk_review_seconds",
            "Risk reviews by purpose (gate, screen) and outcome (clear, at_risk, unavailable)",
            ["purpose", "outcome"],
            buckets=(0.25, 0.5, 1, 2, 4, 8, 16),
            registry=r,
        )
        self.store_up = Gauge("lastresort_store_up", "1 while the database answers, 0 while it does not", registry=r)
        # Up until a check says otherwise: the process only starts once its store has opened.
        self.store_up.set(1)

    def observe_message(self, platform: str) -> None:
        self.messages.labels(platform=platform).inc()

    def observe_model_call(self, seconds: float, usage: Usage) -> None:
        self.model_latency.observe(seconds)
        self._tokens["input"].inc(usage.input_tokens)
        self._tokens["output"].inc(usage.output_tokens)
        self._tokens["cache_read"].inc(usage.cache_read_input_tokens)
        self._tokens["cache_write"].inc(usage.cache_creation_input_tokens)

    def observe_event(self, kind: str, reason: str) -> None:
        # Reasons are short codes from the rules (never free text), so label cardinality stays small.
        self.events.labels(kind=kind, reason=reason[:40]).inc()

    def observe_error(self, kind: str) -> None:
        self.errors.labels(kind=kind).inc()

    def watch_statements(self, counter: StatementCounter) -> None:
        """What the store sent to its database (only when LASTRESORT_COUNT_STATEMENTS=1, for `make bench`)."""
        self.registry.register(_StatementCollector(counter))

    def observe_deferred(self, platform: str, reason: str) -> None:
        self.deferred.labels(platform=platform, reason=reason[:40]).inc()

    def observe_redelivered(self, platform: str) -> None:
        self.redelivered.labels(platform=platform).inc()

    def observe_given_up(self, platform: str, reason: str) -> None:
        self.given_up.labels(platform=platform, reason=reason[:40]).inc()

    def set_store_up(self, up: bool) -> None:
        self.store_up.set(1 if up else 0)

    def observe_review(self, purpose: str, outcome: str, seconds: float, usage: Usage) -> None:
        self.reviews.labels(purpose=purpose, outcome=outcome).observe(seconds)
        self._tokens["review_input"].inc(usage.prompt_tokens)
        self._tokens["review_output"].inc(usage.output_tokens)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _StatementCollector(Collector):
    def __init__(self, counter: StatementCounter) -> None:
        self._counter = counter

    def collect(self) -> Iterator[Metric]:
        for name, value in self._counter.snapshot().items():
            yield CounterMetricFamily(f"lastresort_store_{name}", f"Store {name.replace('_', ' ')}", value=value)
