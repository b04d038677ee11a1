"""The Label Studio webhook endpoint on a port another process holds: one line naming the fix."""

from __future__ import annotations

import socket

import pytest

from stream_router.errors import ConfigError
from stream_router.labelstudio.settings import LabelStudioWebhook
from stream_router.labelstudio.webhook import WebhookReceiver


async def check(name: str) -> None:
    raise AssertionError(f"no post is expected ({name})")


async def test_a_taken_webhook_port_is_a_config_error_naming_the_setting() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        receiver = WebhookReceiver(LabelStudioWebhook(host="127.0.0.1", port=port), check)
        with pytest.raises(ConfigError) as raised:
            await receiver.start()
    assert str(raised.value) == (
        f"review.backend.webhook.port: another process listens on 127.0.0.1:{port}; set "
        "STREAM_ROUTER_REVIEW__BACKEND__WEBHOOK__PORT to a free port (0 picks any)"
    )
    await receiver.stop()  # nothing was left bound or running
