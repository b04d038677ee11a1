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
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

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
