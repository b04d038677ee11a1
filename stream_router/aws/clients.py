"""aioboto3 clients with explicit endpoints: the one way the router reaches AWS.

An endpoint left unset falls through to the AWS SDK's own resolution, which honours the
standard ``AWS_ENDPOINT_URL_<SERVICE>`` variables (``stream-router sandbox env`` prints them).
``sagemaker`` is SageMaker's control plane, asked at start-up whether the configured flow
definitions exist (``aws/flows.py``); ``sagemaker-a2i-runtime`` runs the human loops.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aioboto3
from botocore.config import Config

if TYPE_CHECKING:
    from stream_router.settings import AwsSettings

SERVICES = ("sagemaker-a2i-runtime", "sagemaker", "s3", "sqs", "events")


@dataclass(frozen=True)
class AwsEndpoints:
    """Region, optional per-service endpoint URLs and optional static credentials."""

    region: str
    endpoint_urls: dict[str, str] = field(default_factory=dict)
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)  #: never in a repr or log
    max_attempts: int = 3


class AwsClients:
    """Factory of aioboto3 clients sharing one session."""

    def __init__(self, endpoints: AwsEndpoints) -> None:
        self.endpoints = endpoints
        self._session = aioboto3.Session(
            aws_access_key_id=endpoints.access_key_id,
            aws_secret_access_key=endpoints.secret_access_key,
            region_name=endpoints.region,
        )

    def client(self, service: str) -> AbstractAsyncContextManager[Any]:
        """``async with clients.client("s3") as s3: ...``"""
        if service not in SERVICES:
            raise ValueError(f"unknown AWS service {service!r}; expected one of {SERVICES}")
        config = Config(retries={"mode": "standard", "max_attempts": self.endpoints.max_attempts})
        client: AbstractAsyncContextManager[Any] = self._session.client(
            service, endpoint_url=self.endpoints.endpoint_urls.get(service), config=config
        )
        return client


def clients_from(aws: AwsSettings) -> AwsClients:
    """The clients of the ``aws`` settings section."""
    return AwsClients(
        AwsEndpoints(
            region=aws.region,
            endpoint_urls=aws.endpoint_urls(),
            access_key_id=_secret(aws.access_key_id),
            secret_access_key=_secret(aws.secret_access_key),
            max_attempts=aws.max_attempts,
        )
    )


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None
