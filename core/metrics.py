"""The metrics port. The Prometheus implementation lives with the web server (bots/metrics_http.py)."""

from __future__ import annotations

from typing import Protocol

from core.ports import Usage


class Metrics(Protocol):
    def observe_message(self, platform: str) -> None: ...
    def observe_model_call(self, seconds: float, usage: Usage) -> None: ...
    def observe_event(self, kind: str, reason: str) -> None: ...
    def observe_error(self, kind: str) -> None: ...


class NullMetrics:
    def observe_message(self, platform: str) -> None:
        pass

    def observe_model_call(self, seconds: float, usage: Usage) -> None:
        pass

    def observe_event(self, kind: str, reason: str) -> None:
        pass

    def observe_error(self, kind: str) -> None:
        pass
