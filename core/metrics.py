"""The metrics port. The Prometheus implementation lives with the web server (bots/prometheus_metrics.py)."""

from __future__ import annotations

from typing import Protocol

from core.ports import Usage


class Metrics(Protocol):
    def observe_message(self, platform: str) -> None: ...
    def observe_model_call(self, seconds: float, usage: Usage) -> None: ...
    def observe_event(self, kind: str, reason: str) -> None: ...
    def observe_error(self, kind: str) -> None: ...
    # Durable intake: a message not stored yet is deferred (the platform, or our queue, delivers it again),
    # a redelivery arrives, or it is given up (lost: nobody will deliver it again).
    def observe_deferred(self, platform: str, reason: str) -> None: ...
    def observe_redelivered(self, platform: str) -> None: ...
    def observe_given_up(self, platform: str, reason: str) -> None: ...
    def set_store_up(self, up: bool) -> None: ...
    # The risk review: purpose "gate" or "screen", outcome "clear", "at_risk" or "unavailable".
    def observe_review(self, purpose: str, outcome: str, seconds: float, usage: Usage) -> None: ...


class NullMetrics:
    def observe_message(self, platform: str) -> None:
        pass

    def observe_model_call(self, seconds: float, usage: Usage) -> None:
        pass

    def observe_event(self, kind: str, reason: str) -> None:
        pass

    def observe_error(self, kind: str) -> None:
        pass

    def observe_deferred(self, platform: str, reason: str) -> None:
        pass

    def observe_redelivered(self, platform: str) -> None:
        pass

    def observe_given_up(self, platform: str, reason: str) -> None:
        pass

    def set_store_up(self, up: bool) -> None:
        pass

    def observe_review(self, purpose: str, outcome: str, seconds: float, usage: Usage) -> None:
        pass
