"""Kafka clients (both roles'): their options from the settings, and closing them whatever
the broker does.

:func:`client_options` and :func:`consumer_options` turn ``KafkaSettings`` into aiokafka's
keyword arguments: the ``_ms`` units, the secrets' values and the SSL context are made here,
at the edge, so the settings stay data.

``AIOKafkaConsumer.stop`` leaves the group and ``AIOKafkaProducer.stop`` sends what is buffered:
both talk to the broker. With no broker answering, they either wait for a request timeout
(``kafka.request_timeout_s``: a paused or cut-off broker), or, for the consumer, end early with
a stray ``CancelledError``: aiokafka 0.14's ``Fetcher.close`` cancels its fetch tasks and awaits
each one, and a task cancelled while it sleeps out its retry back-off (which is what fetch
tasks do while no broker answers) re-raises the cancellation, so ``stop()`` raises before it
closed the remaining tasks and the client's connections (the family of aio-libs/aiokafka#647).

:func:`stop_consumer` and :func:`stop_producer` give the close ``timeout_s`` and then finish it
themselves: they cancel the client's background tasks and close its connections. Nothing is
lost by giving up: a record the producer still held belongs to a batch whose offsets were not
committed, so it is consumed and produced again after the restart (at-least-once).

These reach into aiokafka's internals (``_fetcher``, ``_client``, ``_sender``) because its
public API has no way to abandon a close; ``pyproject.toml`` pins aiokafka below 0.15, and
``tests/unit/test_ingest_clients.py`` breaks if those names move.

**What the producers promise on a cluster** (:class:`RetryingProducer`, :func:`producer_options`;
ingest's producer and faust's, which writes the review role's ledger, loop events, outcomes and
changelogs). A role hands a record to its producer and counts on one of two ends: the brokers
take it, or the role stops before committing what the record answers for. The settings:

- ``acks=all``: a write is acknowledged once every in-sync replica has it, and the topics keep
  ``min.insync.replicas`` 2 on a cluster (``topics create``), so an acknowledged record
  survives the loss of its leader. With two of three brokers down the brokers refuse every
  write; the producer keeps trying (below).
- **Idempotence** (``kafka.idempotence``, on by default): the brokers drop a batch they already
  wrote, so a batch retried after a leader change or a lost answer is written once. Without it
  such a retry writes the records twice (harmless to the promise, a duplicate to the
  consumers downstream).
- **No delivery timeout.** aiokafka gives a batch up ``request_timeout_ms`` after it was made:
  a non-idempotent producer when a retriable error answers a send, any producer while the
  partition has no leader. A given-up record leaves the role with a hole it can only fill by
  starting over from its last commit, which is a process exit under the promise's rules, and,
  for an idempotent producer, a sequence gap that kills the producer for good (the next batch
  is refused as out of order). So the producer retries a retriable error until the brokers take
  the batch; an error that is not retriable (an ACL, a record too large) still fails it. A
  stuck cluster is bounded elsewhere: ingest stops consuming at ``ingest.max_in_flight_batches``
  and reports not ready, the review role's intake at ``review.intake_max_waiting``, and a stop
  gives up after ``ingest.drain_timeout_s`` (nothing committed, so nothing lost).
- **In flight:** aiokafka sends one request at a time to each broker and leaves a partition's
  next batch until the last one is answered (it mutes the partition), so retries cannot reorder
  a partition: the compacted ledger's newest value for a key is the one written last. That is
  Kafka's ``max.in.flight.requests.per.connection=1``; there is no setting to raise it.
- ``request_timeout_s``: how long one request waits for its answer before it is retried.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError

from stream_router.errors import ConfigError
from stream_router.settings import KafkaSettings

logger = logging.getLogger(__name__)

#: How long closing one client may take before its remaining work is abandoned.
CLOSE_TIMEOUT_S = 5.0


def client_options(kafka: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments common to aiokafka producers, consumers and admin clients."""
    options: dict[str, Any] = {
        "bootstrap_servers": kafka.bootstrap_servers,
        "client_id": kafka.client_id,
        "security_protocol": kafka.security_protocol,
        "request_timeout_ms": int(kafka.request_timeout_s * 1000),
    }
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        options["ssl_context"] = _ssl_context(kafka)
    if kafka.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = kafka.sasl_mechanism
        options["sasl_plain_username"] = kafka.sasl_username
        options["sasl_plain_password"] = (
            kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
        )
    return options


def consumer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """:func:`client_options` and the consumer group's timing."""
    return {
        **client_options(kafka),
        "session_timeout_ms": int(kafka.session_timeout_s * 1000),
        "heartbeat_interval_ms": int(kafka.heartbeat_interval_s * 1000),
    }


def producer_options(kafka: KafkaSettings) -> dict[str, Any]:
    """:func:`client_options` and what both roles' producers promise (the module docstring)."""
    return {
        **client_options(kafka),
        "acks": "all",
        "enable_idempotence": kafka.idempotence,
        "max_batch_size": kafka.producer_batch_max_bytes,
        "compression_type": kafka.compression(),
    }


class RetryingProducer(AIOKafkaProducer):  # type: ignore[misc]
    """aiokafka's producer, retrying a retriable error until the brokers take the batch.

    The module docstring says why there is no delivery timeout. The batch lifetime is the
    accumulator's ``_batch_ttl`` (aiokafka internals, pinned like the others); every batch,
    ``send`` and ``send_batch`` alike, takes it when it is made.

    A broker that cannot do idempotent writes answers InitProducerId with an error, so
    :meth:`start` fails; it fails as a :class:`~stream_router.errors.ConfigError` naming
    ``kafka.idempotence``.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._message_accumulator._batch_ttl = math.inf

    async def start(self) -> None:
        try:
            await super().start()
        except KafkaError as exc:
            if self._txn_manager is None or exc.retriable or isinstance(exc, KafkaConnectionError):
                raise
            servers = self.client._bootstrap_servers
            raise ConfigError(
                f"kafka.idempotence: the brokers at {servers} refused an idempotent producer "
                f"(InitProducerId: {type(exc).__name__}). Brokers without idempotent writes "
                "(Tansu) need STREAM_ROUTER_KAFKA__IDEMPOTENCE=false; on Apache Kafka with "
                "ACLs, the principal needs WRITE on the topics it produces to"
            ) from exc


class Waits:
    """The waits for acknowledgements under way, by when each began: what a gauge shows as
    the age of the oldest (a cluster refusing writes holds them; see :func:`acknowledged`)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._began: dict[int, float] = {}  # insertion order: the first is the oldest
        self._next = 0

    def begin(self) -> int:
        self._next += 1
        self._began[self._next] = self.clock()
        return self._next

    def end(self, token: int) -> None:
        self._began.pop(token, None)

    def oldest_s(self) -> float:
        """How long the oldest wait under way has lasted; 0 when none is."""
        for began in self._began.values():
            return max(0.0, self.clock() - began)
        return 0.0


def say_unacknowledged(brokers: str, what: str, waited_s: float) -> None:
    """The warning of a write the brokers have not acknowledged yet (both roles say it so)."""
    logger.warning(
        "Kafka at %s has not acknowledged %s for %.0f s; the producer keeps trying",
        brokers,
        what,
        waited_s,
    )


async def acknowledged(
    acks: Sequence[Awaitable[Any]],
    what: str,
    brokers: str,
    every_s: float,
    *,
    check: Callable[[], None] | None = None,
    waits: Waits | None = None,
) -> list[Any]:
    """Wait for ``acks``; while they are outstanding, say so every ``every_s``, and call
    ``check`` (whose error ends the wait: a topic deleted is not a cluster down). ``waits``
    holds the wait while it lasts.

    The producer never gives a batch up on a retriable error (:class:`RetryingProducer`), so
    a cluster that cannot take writes (two of three brokers down) holds the wait; the log says
    what waits, and for how long. A failed ack raises, as ``asyncio.gather`` does.
    """
    gathered = asyncio.gather(*acks)
    waited = 0.0
    token = waits.begin() if waits is not None else 0
    try:
        while True:
            done, _ = await asyncio.wait({gathered}, timeout=every_s)
            if done:
                return gathered.result()
            waited += every_s
            say_unacknowledged(brokers, what, waited)
            if check is not None:
                check()
    except BaseException:
        gathered.cancel()
        raise
    finally:
        if waits is not None:
            waits.end(token)


def _ssl_context(kafka: KafkaSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(kafka.ssl_cafile) if kafka.ssl_cafile else None)
    context.check_hostname = kafka.ssl_check_hostname
    if kafka.ssl_certfile and kafka.ssl_keyfile:
        context.load_cert_chain(
            str(kafka.ssl_certfile),
            str(kafka.ssl_keyfile),
            kafka.ssl_key_password.get_secret_value() if kafka.ssl_key_password else None,
        )
    return context


async def stop_consumer(consumer: AIOKafkaConsumer, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``consumer`` within about ``timeout_s`` (safe before start, and twice)."""
    if await _finished(consumer.stop(), timeout_s, "the Kafka consumer", "leave its group"):
        return
    fetcher = consumer._fetcher  # aiokafka internals: see the module docstring
    if fetcher is not None:
        await _cancel([fetcher._fetch_task, *fetcher._pending_tasks])
    await consumer._client.close()


async def stop_producer(producer: AIOKafkaProducer, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
    """Close ``producer`` within about ``timeout_s``; what it could not send is dropped."""
    if await _finished(producer.stop(), timeout_s, "the Kafka producer", "send its last records"):
        return
    sender = producer._sender  # aiokafka internals: see the module docstring
    if sender is not None:
        await _cancel([sender.sender_task])
    await producer.client.close()


async def _finished(closing: Awaitable[None], timeout_s: float, client: str, work: str) -> bool:
    """Await ``closing`` for ``timeout_s``: True when it finished, False when it was abandoned
    (timed out, or aiokafka's stray cancellation). A cancellation of the caller propagates."""
    task = asyncio.ensure_future(closing)
    try:
        await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:  # the caller is cancelled: so is the close
        task.cancel()
        await asyncio.wait({task})
        raise
    if not task.done():
        task.cancel()
        await asyncio.wait({task})
        logger.warning(
            "%s could not %s within %g s (no broker answered); closed without it",
            client,
            work,
            timeout_s,
        )
        return False
    if task.cancelled():
        logger.debug("%s: aiokafka's close was cancelled from inside; finishing it", client)
        return False
    task.result()  # an error of the close itself
    return True


async def _cancel(tasks: list[asyncio.Task[object] | None]) -> None:
    live = [task for task in tasks if task is not None and not task.done()]
    for task in live:
        task.cancel()
    await asyncio.gather(*live, return_exceptions=True)
