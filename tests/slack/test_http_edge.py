"""The Slack edge as pure functions: the signature on raw bytes first, then parsing, then whose request it is."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from bots.slack.http import FORM, Installation, Refused, check_signature, event_type, foreign, parse_body
from core.readiness import Readiness, StoreWatch
from tests.support.fake_slack import SlackDriver

SECRET = "edge-secret"
NOW = 1_700_000_000


def signed(body: bytes, timestamp: str = str(NOW), secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": f"v0={digest}"}


def refusal(call: object) -> tuple[int, str]:
    with pytest.raises(Refused) as caught:
        call()  # type: ignore[operator]
    return caught.value.status, caught.value.reason


def test_the_signature_is_checked_on_the_raw_bytes_whatever_they_are() -> None:
    for body in (b'{"type": "event_callback"}', b"\xff\xfe not utf-8", b""):
        check_signature(body, signed(body), SECRET, now=NOW)
        assert refusal(lambda body=body: check_signature(body + b" ", signed(body), SECRET, now=NOW)) == (
            401,
            "bad_signature",
        )
    body = b"{}"
    assert refusal(lambda: check_signature(body, {}, SECRET, now=NOW)) == (401, "unsigned")
    assert refusal(lambda: check_signature(body, signed(body, secret="other"), SECRET, now=NOW)) == (
        401,
        "bad_signature",
    )
    for timestamp in ("abc", "1e9", "-1", " 1700000000", "١٧٠٠٠٠٠٠٠٠"):
        assert refusal(lambda t=timestamp: check_signature(body, signed(body, t), SECRET, now=NOW)) == (
            401,
            "bad_timestamp",
        )
    stale = str(NOW - 301)
    assert refusal(lambda: check_signature(body, signed(body, stale), SECRET, now=NOW)) == (401, "stale_timestamp")
    check_signature(body, signed(body, str(NOW - 299)), SECRET, now=NOW)
    headers = {**signed(body), "X-Slack-Signature": "v0=ü-not-ascii"}
    assert refusal(lambda: check_signature(body, headers, SECRET, now=NOW)) == (401, "bad_signature")


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{", "application/json", "bad_json"),
        (b"[1, 2]", "application/json", "bad_json"),
        (b"null", "application/json", "bad_json"),
        (b"\xff", "application/json", "not_utf8"),
        (b"payload=%7Bnope", FORM, "bad_payload"),
        (b"payload=%5B%5D", FORM, "bad_payload"),
        (b"", FORM, "empty_form"),
    ],
)
def test_malformed_bodies_are_refused_as_400(body: bytes, content_type: str, reason: str) -> None:
    assert refusal(lambda: parse_body(body, content_type)) == (400, reason)


def test_well_formed_bodies_parse_as_slack_sends_them() -> None:
    assert parse_body(b'{"type": "url_verification"}', "application/json")[1] == {"type": "url_verification"}
    assert parse_body(b"command=%2Flastresort&text=the+payload+was", FORM)[1]["text"] == "the payload was"
    assert parse_body(b"payload=%7B%22type%22%3A%22block_actions%22%7D", FORM)[1] == {"type": "block_actions"}


def test_requests_for_another_workspace_or_app_are_foreign() -> None:
    driver = SlackDriver(SECRET, "")
    installed = Installation(team_id=driver.team_id, app_id=driver.api_app_id)
    event = driver.build_message("C1", "U1", "hi")
    assert foreign(event, installed) is None
    assert foreign({**event, "team_id": "T9999"}, installed) == "other_team"
    assert foreign({**event, "api_app_id": "A9999"}, installed) == "other_app"
    click = {"type": "block_actions", "team": {"id": "T9999"}, "api_app_id": driver.api_app_id}
    assert foreign(click, installed) == "other_team"
    assert foreign({"type": "url_verification", "challenge": "x"}, installed) is None
    # Nothing learnt at start-up (auth.test failed): nothing to compare with.
    assert foreign({**event, "team_id": "T9999"}, Installation()) is None
    assert event_type(event) == "message"
    assert event_type({"type": "event_callback", "event": "junk"}) == ""
    assert event_type({"type": "block_actions"}) is None


async def test_readiness_follows_the_store_check_and_reports_from_writers() -> None:
    readiness = Readiness()
    up = True

    async def ping() -> None:
        if not up:
            raise ConnectionRefusedError

    watch = StoreWatch(ping, readiness)
    assert await watch.check() and readiness.ready
    up = False
    assert not await watch.check()
    assert readiness.not_ready() == {"store": "ConnectionRefusedError"}
    up = True
    assert await watch.check() and readiness.ready
    watch.report_down("timeout")  # a write that just failed drops readiness at once
    assert readiness.not_ready() == {"store": "timeout"}
    readiness.report("slack", ready=False, reason="app_uninstalled")
    assert await watch.check()
    assert readiness.not_ready() == {"slack": "app_uninstalled"}
