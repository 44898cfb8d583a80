"""`lastresort chat`: the core in a terminal. One message per line on stdin, replies on stdout.

Works with piped input as well as a TTY (replies stream only on a TTY). The conversation in use is
remembered in the store, so a restart continues where the last run stopped.
"""

from __future__ import annotations

import asyncio
import getpass
import sys
import threading
from dataclasses import dataclass
from typing import TextIO

from core.domain import ThreadKey
from core.outcomes import (
    AlreadyEnded,
    ConfirmationAnswered,
    ConfirmationRequested,
    Ended,
    EndingNotice,
    Ignored,
    ModelRefused,
    ModelUnavailable,
    NotAllowed,
    Outcome,
    Rejected,
    Reply,
    WarningGiven,
)
from core.ports import TextSink
from core.service import BranchSource, ConversationService, InboundMessage, feedback_text

PLATFORM = "terminal"
HELP = (
    "Commands: /new starts a new conversation, /edit N text branches from your N-th message, "
    "/feedback good|bad rates this conversation, /help shows this, /quit (or Ctrl-D, Ctrl-C) exits."
)
ENDED_HINT = "Type /new to start a new conversation, or /edit N text to branch from your N-th message."
YES = {"y", "yes"}
WITHDRAWN = "[withdrawn: the text above was not Claude's final answer]"


def terminal_notice(notice: EndingNotice) -> str:
    return (
        f"--- {notice.title} ---\n{notice.explanation}\n"
        f"{notice.next_steps}\n{ENDED_HINT}\n(Feedback: /feedback good or /feedback bad)"
    )


@dataclass
class _State:
    key: ThreadKey
    pending_confirmation: int | None = None
    last_conversation_id: int | None = None


class TerminalChat:
    def __init__(
        self,
        service: ConversationService,
        *,
        stdin: TextIO | None = None,
        stdout: TextIO | None = None,
        user: str | None = None,
        log_note: str = "",
    ) -> None:
        self._service = service
        self._log_note = log_note
        self._in = stdin or sys.stdin
        self._out = stdout or sys.stdout
        self._user = user or getpass.getuser()
        self._stream = self._out.isatty()
        self._shown = ""  # what the current answer has streamed so far (TTY only)
        self._lines: asyncio.Queue[str | None] | None = None

    def _print(self, text: str = "") -> None:
        self._out.write(text + "\n")
        self._out.flush()

    async def _read_line(self) -> str | None:
        if self._lines is None:
            self._lines = asyncio.Queue()
            self._start_reader(self._lines)
        line = await self._lines.get()
        return None if line is None else line.rstrip("\r\n")

    def _start_reader(self, lines: asyncio.Queue[str | None]) -> None:
        """Read stdin on a daemon thread of our own: a blocked read must never hold up Ctrl-C or the exit
        (a read on asyncio's default executor would: the loop waits for that executor when it closes)."""
        loop = asyncio.get_running_loop()

        def read() -> None:
            while True:
                try:
                    line = self._in.readline()
                except (OSError, ValueError):
                    line = ""
                try:
                    loop.call_soon_threadsafe(lines.put_nowait, line or None)
                except RuntimeError:  # the loop is closed: the chat is over
                    return
                if not line:
                    return

        threading.Thread(target=read, name="terminal-stdin", daemon=True).start()

    def _key(self, number: int) -> ThreadKey:
        return ThreadKey(PLATFORM, self._user, str(number))

    async def _latest_number(self) -> int:
        latest = await self._service.latest_conversation(platform=PLATFORM, place=self._user)
        return int(latest.key.thread) if latest and latest.key.thread.isdigit() else 0

    async def run(self) -> int:
        number = max(await self._latest_number(), 1)
        state = _State(self._key(number))
        self._print(f"Last Resort terminal chat, conversation {number}. {HELP}")
        if self._log_note:
            self._print(self._log_note)
        while (line := await self._read_line()) is not None:
            if state.pending_confirmation is not None:
                await self._confirm(state, line)
                continue
            command, _, rest = line.strip().partition(" ")
            if command == "/quit":
                break
            if command == "/new":
                number = await self._latest_number() + 1
                state = _State(self._key(number))
                self._print(f"Started conversation {number}.")
            elif command == "/edit":
                await self._edit(state, rest)
            elif command == "/feedback":
                await self._feedback(state, rest)
            elif command == "/help":
                self._print(HELP)
            elif command.startswith("/") and len(command) > 1 and " " not in command:
                self._print(f"Unknown command {command}. {HELP}")
            else:
                await self._send(state, line)
        return 0

    async def _send(self, state: _State, text: str) -> None:
        outcome = await self._service.handle_message(
            InboundMessage(key=state.key, author_id=self._user, author_name=self._user, text=text, may_start=True),
            self._streamer() if self._stream else None,
        )
        self._render(state, outcome)

    def _streamer(self) -> TextSink:
        self._shown = ""

        async def show(text: str) -> None:
            if not self._shown:
                self._out.write("Claude: ")
            if text.startswith(self._shown):
                self._out.write(text[len(self._shown) :])
            else:
                # The model started over (after a refused tool call): what it said before is void.
                self._out.write(f"\n{WITHDRAWN}\nClaude: {text}")
            self._out.flush()
            self._shown = text

        return show

    def _say(self, text: str) -> None:
        """The model's words for this message. On a TTY they were streamed already; if the core replaced
        them (a refused tool call), the stream is marked as withdrawn and the real answer follows."""
        shown, self._shown = self._shown.strip(), ""
        if not shown:
            if text:
                self._print(f"Claude: {text}")
            return
        self._print()
        if shown != text.strip():
            self._print(WITHDRAWN)
            if text:
                self._print(f"Claude: {text}")

    def _render(self, state: _State, outcome: Outcome | ConfirmationAnswered | NotAllowed) -> None:
        match outcome:
            case Reply(conversation=c, text=text, support=support):
                state.last_conversation_id = c.id
                self._say(text)
                if support:
                    self._print(f"[support] {support}")
            case WarningGiven(conversation=c, text=text):
                state.last_conversation_id = c.id
                self._say(text)
                self._print("[warning] This reply is a formal warning: the conversation may end if this continues.")
            case Ended(conversation=c, text=text, notice=notice):
                state.last_conversation_id = c.id
                self._say(text)
                self._print(terminal_notice(notice))
            case ConfirmationRequested(conversation=c, text=text, confirmation_id=cid):
                state.last_conversation_id = c.id
                self._say(text)
                state.pending_confirmation = cid
                self._print(f"{self._service.settings.notices.confirm_question} [y/N]")
            case ConfirmationAnswered(confirmed=True, notice=notice) if notice is not None:
                self._print(terminal_notice(notice))
            case ConfirmationAnswered(text=text):
                self._print(text)
            case AlreadyEnded(conversation=c):
                state.last_conversation_id = c.id
                self._print(f"This conversation has ended; your message was not sent. {ENDED_HINT}")
            case ModelUnavailable(text=text) | ModelRefused(text=text) | Rejected(text=text) | NotAllowed(text=text):
                self._say("")
                self._print(text)
            case Ignored(reason=reason):
                self._print(f"(nothing to answer: {reason})")

    async def _confirm(self, state: _State, line: str) -> None:
        confirmation_id = state.pending_confirmation
        state.pending_confirmation = None
        assert confirmation_id is not None
        answer = await self._service.answer_confirmation(
            confirmation_id=confirmation_id, actor_id=self._user, confirmed=line.strip().lower() in YES
        )
        self._render(state, answer)

    async def _edit(self, state: _State, rest: str) -> None:
        number_text, _, new_text = rest.strip().partition(" ")
        if not number_text.isdigit() or not new_text.strip():
            self._print("Usage: /edit N new text   (N counts your messages in this conversation from 1)")
            return
        source = await self._service.find_nth_user_message(key=state.key, n=int(number_text), editor_id=self._user)
        if not isinstance(source, BranchSource):
            self._print(source.text if isinstance(source, NotAllowed) else f"Cannot branch: {source.reason}.")
            return
        rejected = self._service.check_text(new_text)
        if rejected is not None:
            # Checked before switching: a branch that cannot start must not leave the user elsewhere.
            self._print(rejected.text)
            return
        number = await self._latest_number() + 1
        state.key = self._key(number)
        state.pending_confirmation = None
        self._print(f"Branched into conversation {number} from your message {number_text}.")
        outcome = await self._service.branch(
            source,
            key=state.key,
            new_text=new_text,
            author_name=self._user,
            on_text=self._streamer() if self._stream else None,
        )
        self._render(state, outcome)

    async def _feedback(self, state: _State, rest: str) -> None:
        conversation = await self._service.find_conversation(state.key)
        if conversation is None or rest.strip() not in ("good", "bad"):
            self._print("Usage: /feedback good|bad (about this conversation)")
            return
        recorded = await self._service.record_feedback(
            conversation_id=conversation.id, actor_id=self._user, helpful=rest.strip() == "good"
        )
        self._print(feedback_text(recorded))
