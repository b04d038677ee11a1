"""The sandbox's Label Studio keeps its SSRF protection on, narrowed to let loopback through.

A project member can point a webhook (or a URL import) anywhere; the protection is what keeps
Label Studio from being the way into the cloud's instance metadata or a private network.
"""

from __future__ import annotations

import pytest

from stream_router.errors import StreamRouterError
from stream_router.labelstudio.client import LabelStudioClient
from stream_router.sandbox.stack import SandboxInfo

pytestmark = [pytest.mark.integration, pytest.mark.label_studio]


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # instance metadata
        "http://[::ffff:a9fe:a9fe]/latest/meta-data/",  # the same, IPv4-mapped
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://[fd00::1]/",
    ],
)
async def test_webhooks_to_private_networks_are_refused(
    admin: LabelStudioClient, label_studio_info: SandboxInfo, url: str
) -> None:
    project = label_studio_info.label_studio_projects["never"]
    with pytest.raises(StreamRouterError):
        await admin.create_webhook(project, url, ["ANNOTATION_CREATED"])
    assert url not in [hook["url"] for hook in await admin.webhooks(project)]


async def test_a_webhook_to_the_router_on_loopback_is_accepted(
    admin: LabelStudioClient, label_studio_info: SandboxInfo
) -> None:
    project = label_studio_info.label_studio_projects["never"]
    url = "http://127.0.0.1:9/ssrf-test/label-studio/webhook"
    hook = await admin.create_webhook(project, url, ["ANNOTATION_CREATED"])
    try:
        assert url in [h["url"] for h in await admin.webhooks(project)]
    finally:
        await admin.request("DELETE", f"/api/webhooks/{hook['id']}/")
