"""Watchers that long-poll SQS and hand each review's :class:`LoopEvent` to ``emit``.

Usage::

    watcher = EventBridgeSqsWatcher(clients, queue_url, emit)   # emit: async (LoopEvent) -> None
    await watcher.run(stop)                                      # until stop is set

Delivery is at-least-once: a message is deleted only after ``emit`` returned for every event it
carries. When ``emit`` raises, the message stays and SQS delivers it again once its visibility
timeout (``visibility_timeout_s``, else the queue's) has passed; other messages of the batch go
on. Messages that are not the expected event (not JSON, wrong shape) are logged without their
body, counted in ``counts.unparseable`` and deleted, so they cannot come back forever; valid
messages with nothing to report (other detail-types, ``s3:TestEvent``, other keys) are deleted
and counted in ``counts.ignored``. SQS errors and emit failures back off exponentially
(``backoff_initial_s`` doubling up to ``backoff_max_s``, jittered: the review path's one retry
policy, ``review/retry.py``); setting ``stop`` ends the back-off at
once, and ends ``run`` when the poll in progress returns (at most ``wait_time_s``).

``on_poll``, when given, is called with the counters after every poll (its messages handled, or
its error counted): a place for metrics and liveness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, replace
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from stream_router.aws.clients import AwsClients
from stream_router.aws.messages import (
    MalformedMessage,
    decode_body,
    eventbridge_event,
    s3_output_events,
)
from stream_router.aws.settings import A2ISettings
from stream_router.errors import ConfigError
from stream_router.review.backend import Signal
from stream_router.review.events import LoopEvent
from stream_router.review.retry import RetryPolicy

logger = logging.getLogger(__name__)

Emit = Callable[[LoopEvent], Awaitable[None]]
_SQS_ERRORS = (ClientError, BotoCoreError)


@dataclass
class WatcherCounts:
    """What a watcher did since it was made (for tests, logs and metrics)."""

    received: int = 0  #: messages received, redeliveries included
    emitted: int = 0  #: events emit accepted
    deleted: int = 0  #: messages deleted
    ignored: int = 0  #: valid messages with no event for us
    unparseable: int = 0  #: malformed messages (deleted)
    emit_failures: int = 0  #: emit raised; the message was left for redelivery
    sqs_errors: int = 0  #: failed receives and deletes


class PollErrors:
    """What each poll added to a watcher's error counts, for metrics.

    Called with the watcher's cumulative :class:`WatcherCounts` after every poll (an
    ``on_poll`` callback); returns ``{"sqs": n, "forward": n, "unparseable": n}`` for that poll.
    """

    def __init__(self) -> None:
        self._seen = WatcherCounts()

    def __call__(self, counts: WatcherCounts) -> dict[str, int]:
        seen, self._seen = self._seen, replace(counts)
        return {
            "sqs": counts.sqs_errors - seen.sqs_errors,
            "forward": counts.emit_failures - seen.emit_failures,
            "unparseable": counts.unparseable - seen.unparseable,
        }


class SqsWatcher(Signal):
    """The long-poll loop, a completion signal of the A2I backend; subclasses say how a message
    body becomes events. It beats once per poll (``on_poll``), so at least every
    ``wait_time_s`` while it works."""

    kind = "sqs"  #: names the watcher in log lines

    def __init__(
        self,
        clients: AwsClients,
        queue_url: str,
        emit: Emit,
        *,
        wait_time_s: int = 20,
        visibility_timeout_s: int | None = None,
        max_messages: int = 10,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.time,
        on_poll: Callable[[WatcherCounts], None] | None = None,
    ) -> None:
        if not 0 <= wait_time_s <= 20:
            raise ConfigError(f"wait_time_s {wait_time_s} is outside SQS's range 0-20")
        if visibility_timeout_s is not None and not 0 <= visibility_timeout_s <= 43_200:
            raise ConfigError(
                f"visibility_timeout_s {visibility_timeout_s} is outside SQS's range 0-43200"
            )
        if not 1 <= max_messages <= 10:
            raise ConfigError(f"max_messages {max_messages} is outside SQS's range 1-10")
        if not 0 < backoff_initial_s <= backoff_max_s:
            raise ConfigError("backoff needs 0 < backoff_initial_s <= backoff_max_s")
        self._clients = clients
        self.queue_url = queue_url
        self._emit = emit
        self._receive_args: dict[str, Any] = {
            "QueueUrl": queue_url,
            "MaxNumberOfMessages": max_messages,
            "WaitTimeSeconds": wait_time_s,
        }
        if visibility_timeout_s is not None:
            self._receive_args["VisibilityTimeout"] = visibility_timeout_s
        self._retry = RetryPolicy(
            base_s=backoff_initial_s, max_s=backoff_max_s, rng=rng or random.Random()
        )
        self._clock = clock
        self._on_poll = on_poll
        self.beat_s = float(wait_time_s)
        self.counts = WatcherCounts()

    @abstractmethod
    def parse(self, message: dict[str, Any], observed_at_s: float) -> list[LoopEvent]:
        """The events a decoded message body carries; raises ``MalformedMessage``."""

    async def run(self, stop: asyncio.Event) -> None:
        """Poll, emit, delete, until ``stop`` is set (one SQS client for the whole run)."""
        logger.info("%s watcher polling %s", self.kind, self.queue_url)
        failures = 0
        async with self._clients.client("sqs") as sqs:
            while not stop.is_set():
                try:
                    reply = await sqs.receive_message(**self._receive_args)
                except _SQS_ERRORS as exc:
                    self.counts.sqs_errors += 1
                    failures += 1
                    delay = self._backoff(failures)
                    logger.warning(
                        "%s watcher: receive failed (%s); retrying in %.1f s",
                        self.kind,
                        _describe_error(exc),
                        delay,
                    )
                    self._polled()
                    await _pause(stop, delay)
                    continue
                messages = reply.get("Messages", [])
                self.counts.received += len(messages)
                handled = await self._handle(sqs, messages)
                self._polled()
                if handled:
                    failures = 0
                else:
                    failures += 1
                    await _pause(stop, self._backoff(failures))
        logger.info("%s watcher stopped", self.kind)

    async def _handle(self, sqs: Any, messages: list[dict[str, Any]]) -> bool:
        """Emit every message's events, delete the handled ones; False when any emit failed."""
        done = []
        for message in messages:
            if await self._process(message):
                done.append(message)
        if done:
            await self._delete(sqs, done)
        return len(done) == len(messages)

    async def _process(self, message: dict[str, Any]) -> bool:
        message_id = message.get("MessageId", "?")
        try:
            events = self.parse(decode_body(message.get("Body", "")), self._clock())
        except MalformedMessage as exc:
            self.counts.unparseable += 1
            logger.warning(
                "%s watcher: message %s is not a valid event (%s); deleting it",
                self.kind,
                message_id,
                exc,
            )
            return True
        if not events:
            self.counts.ignored += 1
            return True
        for event in events:
            try:
                await self._emit(event)
            except Exception as exc:
                self.counts.emit_failures += 1
                logger.warning(
                    "%s watcher: emit failed for loop %s (%s); message %s left for redelivery",
                    self.kind,
                    event.name,
                    type(exc).__name__,
                    message_id,
                    exc_info=True,
                )
                return False
            self.counts.emitted += 1
        return True

    async def _delete(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        entries = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
        ]
        try:
            reply = await sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except _SQS_ERRORS as exc:
            self.counts.sqs_errors += 1
            logger.warning(
                "%s watcher: deleting %d messages failed (%s); they will be redelivered",
                self.kind,
                len(entries),
                _describe_error(exc),
            )
            return
        self.counts.deleted += len(reply.get("Successful", []))
        for failed in reply.get("Failed", []):
            self.counts.sqs_errors += 1
            logger.warning(
                "%s watcher: delete of message %s failed (%s); it will be redelivered",
                self.kind,
                messages[int(failed["Id"])].get("MessageId", "?"),
                failed.get("Code", "?"),
            )

    def _polled(self) -> None:
        if self._on_poll is not None:
            self._on_poll(self.counts)

    def _backoff(self, failures: int) -> float:
        return self._retry.delay(failures)


class EventBridgeSqsWatcher(SqsWatcher):
    """A2I status-change events (Completed, Failed, Stopped) routed by EventBridge to SQS."""

    kind = "eventbridge"

    def parse(self, message: dict[str, Any], observed_at_s: float) -> list[LoopEvent]:
        event = eventbridge_event(message, observed_at_s=observed_at_s)
        return [event] if event is not None else []


class S3OutputSqsWatcher(SqsWatcher):
    """S3 ObjectCreated notifications of A2I output.json files (status unknown: None).

    The loop name comes from the output key's layout; see ``stream_router.aws.messages``.
    """

    kind = "s3-output"

    def parse(self, message: dict[str, Any], observed_at_s: float) -> list[LoopEvent]:
        return s3_output_events(message, observed_at_s=observed_at_s)


async def _pause(stop: asyncio.Event, delay_s: float) -> None:
    """Sleep ``delay_s``, or less when ``stop`` is set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay_s)


def _describe_error(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__


def sqs_watchers(
    settings: A2ISettings,
    active: Collection[str],
    clients: AwsClients,
    emit: Emit,
    on_poll: Callable[[str], Callable[[WatcherCounts], None]],
) -> list[SqsWatcher]:
    """The SQS watchers of ``active`` (``watchers.enabled``) that have their queue in
    ``settings``; ``on_poll(kind)`` reports polls."""
    queues: list[tuple[type[SqsWatcher], str | None]] = [
        (EventBridgeSqsWatcher, settings.event_queue_url),
        (S3OutputSqsWatcher, settings.output_queue_url),
    ]
    watchers: list[SqsWatcher] = []
    for watcher, queue_url in queues:
        if watcher.kind in active and queue_url:
            poll = on_poll(watcher.kind)
            watchers.append(
                watcher(clients, queue_url, emit, wait_time_s=settings.wait_time_s, on_poll=poll)
            )
    return watchers
