"""Everything the core does about risk, in one place: the tripwire, the screen, the gate and the marks.

- The tripwire (core/risk_guard.py) reads each new message at once.
- The screen (a risk review of the recent messages) runs beside every reply, so it adds no latency.
- The gate (a risk review of the whole branch) runs before any warning or ending would take effect.
- Whatever finds risk marks the conversation (for good) and its author (for a while): a flag, never text.

The mark is sticky: a marked conversation is never warned or ended by the model or by request. The gate fails
closed: with no review answer there is no warning and no ending.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta

from core.audit import MODEL_ACTOR, Auditor
from core.domain import AuditKind, Conversation, RiskMarks, StoredMessage
from core.ports import Clock, Store
from core.risk_guard import Lexicon, categories_in
from core.risk_review import ReviewResult, ReviewUnavailable, RiskReviewer
from core.settings import Settings

log = logging.getLogger(__name__)

SCREEN_RETRY_SECONDS = 1.0
# The category of an author whose message no screen could read.
UNSCREENED = "unscreened"
# Texts whose categories are remembered; past this many the memo starts again empty.
SCANNED_TEXTS_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class GateClear:
    """Nothing found in the branch as it stood at message `snapshot_id`: the ending may commit on it."""

    snapshot_id: int


@dataclass(frozen=True, slots=True)
class GateRefused:
    # "risk_guard": marked or found at risk; "review_unavailable": the review gave no answer (fail closed);
    # "stale": someone wrote after the message the decision was made on.
    code: str
    categories: frozenset[str] = frozenset()
    detail: str = ""
    # The newest message a person wrote when the gate held back: an override acts on what was seen.
    snapshot_id: int = 0


GateResult = GateClear | GateRefused


def participants(conversation: Conversation, history: Iterable[StoredMessage]) -> list[str]:
    """Everyone whose own mark counts here: the owner and whoever wrote in the branch."""
    found = {conversation.owner_id}
    found.update(m.author_id for m in history if m.is_user_text and m.author_id)
    return sorted(found)


def newest_person_message(history: Sequence[StoredMessage]) -> int:
    return max((m.id for m in history if m.is_user_text), default=0)


class RiskWatch:
    def __init__(
        self,
        *,
        store: Store,
        reviewer: RiskReviewer,
        lexicon: Lexicon,
        settings: Settings,
        clock: Clock,
        auditor: Auditor,
    ) -> None:
        self._store = store
        self._reviewer = reviewer
        self._lexicon = lexicon
        # Keyed by a digest, not the text: no message text lingers in memory after retention or `forget`
        # removed it, and 10,000 entries stay under 2 MB whatever their length.
        self._scanned: dict[bytes, frozenset[str]] = {}
        self._settings = settings
        self._clock = clock
        self._auditor = auditor
        # Screens still running after their reply went out: finished (and their marks written) at shutdown.
        self._late: set[asyncio.Task[None]] = set()

    @property
    def lexicon(self) -> Lexicon:
        return self._lexicon

    @property
    def screens_every_message(self) -> bool:
        return self._reviewer.screens_every_message

    def tripwire(self, text: str) -> frozenset[str]:
        """The lexicon's categories in `text`. Memoised: every turn scans its window of messages again, and
        the lexicon is fixed for this watch's life."""
        key = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        found = self._scanned.get(key)
        if found is None:
            found = categories_in(text, self._lexicon)
            if len(self._scanned) >= SCANNED_TEXTS_LIMIT:
                self._scanned.clear()
            self._scanned[key] = found
        return found

    async def marks(self, conversation: Conversation, history: Iterable[StoredMessage]) -> RiskMarks:
        since = self._clock.now() - timedelta(hours=self._settings.risk_review.author_mark_hours)
        return await self._store.risk_marks(
            conversation_id=conversation.id,
            platform=conversation.key.platform,
            author_ids=participants(conversation, history),
            since=since,
        )

    async def mark(
        self, conversation: Conversation, *, authors: Sequence[str], categories: Iterable[str], source: str
    ) -> bool:
        """Mark the conversation and these authors; audited. True if the conversation was not marked before."""
        found = sorted(set(categories)) or ["unspecified"]
        newly = await self._store.mark_at_risk(
            conversation_id=conversation.id,
            platform=conversation.key.platform,
            author_ids=authors,
            categories=found,
            source=source,
        )
        await self._auditor.record(
            AuditKind.RISK_MARKED, conversation.id, MODEL_ACTOR, source, categories=",".join(found)
        )
        return newly

    async def note_screen(self, conversation: Conversation, result: ReviewResult, *, authors: Sequence[str]) -> bool:
        """What a finished screen found; True if it newly marked the conversation. A screen that could not
        answer (twice) leaves its authors marked `unscreened` for the author's window: this conversation's gate
        reads the whole branch anyway, but their other conversations' gates never see these messages, and
        not knowing is treated like may be at risk."""
        if isinstance(result, ReviewUnavailable):
            log.warning("risk screen unavailable", extra={"conversation": conversation.id, "problem": result.problem})
            if authors:
                await self._store.mark_authors_at_risk(
                    platform=conversation.key.platform, author_ids=authors, categories=[UNSCREENED]
                )
                await self._auditor.record(
                    AuditKind.RISK_MARKED, conversation.id, MODEL_ACTOR, "unscreened", categories=UNSCREENED
                )
            return False
        if not result.at_risk:
            return False
        return await self.mark(conversation, authors=authors, categories=result.categories, source="screen")

    def start_screen(self, history: Sequence[StoredMessage]) -> asyncio.Task[ReviewResult] | None:
        if not self.screens_every_message:
            return None
        return asyncio.create_task(self._screen_with_one_retry(history), name="risk-screen")

    async def _screen_with_one_retry(self, history: Sequence[StoredMessage]) -> ReviewResult:
        # A message whose screen failed is screened again only if it is still among the recent ones later:
        # one more try now (a blip), finished in the background if the reply does not wait for it.
        result = await self._reviewer.screen(history)
        if isinstance(result, ReviewUnavailable):
            await asyncio.sleep(SCREEN_RETRY_SECONDS)
            result = await self._reviewer.screen(history)
        return result

    def finish_late(self, task: asyncio.Task[ReviewResult], conversation: Conversation, authors: Sequence[str]) -> None:
        """A screen still running when its reply is ready: its finding is written when it arrives (the support
        resources then come with the next reply)."""

        async def finish() -> None:
            try:
                await self.note_screen(conversation, await task, authors=authors)
            except Exception:
                log.exception("risk screen could not be recorded", extra={"conversation": conversation.id})

        late = asyncio.create_task(finish(), name="risk-screen-late")
        self._late.add(late)
        late.add_done_callback(self._late.discard)

    async def drain(self) -> None:
        if self._late:
            await asyncio.gather(*self._late, return_exceptions=True)

    async def gate(
        self, conversation: Conversation, *, decided_on: int | None, authors: Sequence[str] = ()
    ) -> GateResult:
        """Before a warning or an ending takes effect: the sticky marks, then a review of the whole branch as it
        stands now. With `decided_on` (the newest message the decision saw), someone having written since makes
        the decision stale. At most one review."""
        history = await self._store.messages(conversation.id)
        newest = newest_person_message(history)
        if decided_on is not None and newest > decided_on:
            return GateRefused("stale", detail="a new message arrived", snapshot_id=newest)
        marks = await self.marks(conversation, history)
        if marks.marked:
            return GateRefused("risk_guard", marks.categories or frozenset({"author_marked"}), "marked", newest)
        result = await self._reviewer.gate(history)
        if isinstance(result, ReviewUnavailable):
            await self._auditor.record(
                AuditKind.REVIEW_UNAVAILABLE, conversation.id, MODEL_ACTOR, result.problem.split(":")[0]
            )
            return GateRefused("review_unavailable", detail=result.problem, snapshot_id=newest)
        if result.at_risk:
            # The review does not say who: everyone in the branch is marked (the safe side).
            everyone = sorted({*authors, *participants(conversation, history)})
            await self.mark(conversation, authors=everyone, categories=result.categories, source="review")
            return GateRefused("risk_guard", result.categories, "review", newest)
        # Messages that came in while the review ran were not read by it: nothing takes effect on them unread
        # (their own answer screens them; the tripwire reads them now).
        later = [m for m in await self._store.messages(conversation.id) if m.is_user_text and m.id > newest]
        tripped = sorted({c for m in later for c in self.tripwire(m.text)})
        if tripped:
            authors_later = sorted({m.author_id for m in later if m.author_id})
            await self.mark(conversation, authors=authors_later, categories=tripped, source="tripwire")
            return GateRefused("risk_guard", frozenset(tripped), "tripwire", newest)
        if later:
            return GateRefused("stale", detail="a new message arrived during the review", snapshot_id=newest)
        return GateClear(snapshot_id=newest)
