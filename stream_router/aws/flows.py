"""The A2I flow definitions a router configuration names, checked at start-up.

A typo in a flow definition ARN passes every static check, and every review of its route would
then end rejected ("Flow definition ... does not exist") in the dead-letter topic.
:func:`check_flow_definitions` asks SageMaker's control plane (``DescribeFlowDefinition``, by
the name at the end of the ARN) about every flow the configuration names, once per ARN, before
the review role starts a single review. What start-up does with each answer:

=============================================  ==================================================
answer                                         start-up
=============================================  ==================================================
status Active, the configured ARN              goes on
not a flow definition ARN                      ConfigError naming the setting (no call made)
ResourceNotFound                               ConfigError naming the setting and the flow
the flow found has another ARN                 ConfigError naming both (the configured ARN's
                                               Region or account is not where the router runs)
Initializing                                   asked again until ``wait_s`` is over, then as below
Failed, Deleting (any status but Active)       ConfigError naming the status (and FailureReason)
AccessDeniedException                          ConfigError naming the IAM permission
                                               ``sagemaker:DescribeFlowDefinition``
credentials refused or missing                 ConfigError
throttled, 5xx, no answer                      asked again (0.5 s doubling to 5 s between tries)
                                               until ``wait_s`` is over, then ConfigError naming
                                               the endpoint
=============================================  ==================================================

botocore retries throttling, 5xx and connection errors itself first (``aws.max_attempts``); the
wait above spans a control plane that stays unwell longer, such as a restarting endpoint.
Every setting that names a flow is checked: each route's ``review_flow`` (shadow routes too: a
route taken out of shadow must work at once) and each ``review.escalation_flows`` value.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from stream_router.errors import ConfigError
from stream_router.settings import Settings

logger = logging.getLogger(__name__)

STARTUP_WAIT_S = 30.0  #: how long start-up asks again a control plane that throttles or is down
PERMISSION = "sagemaker:DescribeFlowDefinition"
FLOW_ARN = re.compile(
    r"^arn:aws[a-z-]*:sagemaker:(?P<region>[a-z0-9-]+):(?P<account>[0-9]{12})"
    r":flow-definition/(?P<name>[a-z0-9](-*[a-z0-9]){0,62})$"
)
_THROTTLED = frozenset(
    {"ThrottlingException", "Throttling", "TooManyRequestsException", "RequestLimitExceeded"}
)
_DENIED = frozenset({"AccessDeniedException", "AccessDenied"})
_BAD_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "ExpiredTokenException",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "MissingAuthenticationTokenException",
        "IncompleteSignature",
    }
)
_FIRST_PAUSE_S = 0.5
_MAX_PAUSE_S = 5.0


@dataclass(frozen=True)
class FlowUse:
    """One setting that names a flow definition: where (for messages) and the ARN it names."""

    where: str  #: e.g. ``policies.routes.1.review_flow (route experts)``
    arn: str


def flow_uses(settings: Settings) -> list[FlowUse]:
    """Every route's ``review_flow`` and every ``review.escalation_flows`` value, in order."""
    return [FlowUse(where, arn) for where, arn in settings.named_flows()]


def flow_name(use: FlowUse) -> str:
    """The flow definition name at the end of ``use.arn``; ConfigError if it is no such ARN."""
    found = FLOW_ARN.match(use.arn)
    if found is None:
        raise ConfigError(
            f"{use.where}: {use.arn!r} is not an A2I flow definition ARN "
            "(arn:aws:sagemaker:<region>:<account>:flow-definition/<name>)"
        )
    return found["name"]


class _Transient(Exception):
    """An answer that may change if asked again (throttled, 5xx, no answer, Initializing)."""


async def check_flow_definitions(
    sagemaker: Any, uses: Sequence[FlowUse], *, wait_s: float = STARTUP_WAIT_S
) -> None:
    """Fail with ConfigError unless every flow in ``uses`` exists and is Active (module doc).

    ``sagemaker`` is an open aioboto3 ``sagemaker`` client.
    """
    wheres: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for use in uses:
        names[use.arn] = flow_name(use)  # every ARN's form is checked before the first call
        wheres.setdefault(use.arn, []).append(use.where)
    endpoint = str(getattr(sagemaker.meta, "endpoint_url", "") or "the SDK's endpoint")
    region = str(getattr(sagemaker.meta, "region_name", "") or "?")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    pause = _FIRST_PAUSE_S
    for arn, name in names.items():
        where = ", ".join(wheres[arn])
        while True:
            try:
                _verify(await _describe(sagemaker, name, where, arn, endpoint), name, where, arn)
                break
            except _Transient as exc:
                left = deadline - loop.time()
                if left <= 0:
                    raise ConfigError(
                        f"{where}: cannot check flow definition {name!r} at {endpoint} "
                        f"(SageMaker in {region}): {exc}; gave up after {wait_s:.0f} s"
                    ) from exc
                logger.warning(
                    "checking flow definition %s at %s: %s; asking again for %.0f s more",
                    name,
                    endpoint,
                    exc,
                    left,
                )
                await asyncio.sleep(min(pause, left))  # back-off between tries, not a sync
                pause = min(pause * 2, _MAX_PAUSE_S)
    logger.info("A2I flow definitions Active at %s: %s", endpoint, sorted(names.values()))


async def _describe(
    sagemaker: Any, name: str, where: str, arn: str, endpoint: str
) -> dict[str, Any]:
    try:
        response: dict[str, Any] = await sagemaker.describe_flow_definition(FlowDefinitionName=name)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "ResourceNotFound":
            raise ConfigError(
                f"{where}: flow definition {name!r} does not exist (arn {arn}; SageMaker at "
                f"{endpoint} says: {message or code})"
            ) from exc
        if code in _THROTTLED or status >= 500:
            raise _Transient(f"{code or status} ({message})") from exc
        if code in _DENIED:
            raise ConfigError(
                f"{where}: the router may not describe flow definition {name!r}: grant "
                f"{PERMISSION} on {arn} to its IAM identity ({code}: {message})"
            ) from exc
        if code in _BAD_CREDENTIALS:
            raise ConfigError(
                f"SageMaker at {endpoint} refused the router's AWS credentials ({code}: "
                f"{message}); check aws.access_key_id and aws.secret_access_key, or the SDK's "
                "credential chain"
            ) from exc
        raise ConfigError(
            f"{where}: DescribeFlowDefinition {name!r} at {endpoint} failed: {code} ({message})"
        ) from exc
    except (BotoConnectionError, HTTPClientError) as exc:
        raise _Transient(f"no answer ({type(exc).__name__}: {exc})") from exc
    except BotoCoreError as exc:  # no credentials, a request botocore refuses to send, ...
        raise ConfigError(
            f"{where}: cannot ask SageMaker at {endpoint} about flow definition {name!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return response


def _verify(described: dict[str, Any], name: str, where: str, arn: str) -> None:
    status = described.get("FlowDefinitionStatus")
    if status == "Initializing":
        raise _Transient(f"flow definition {name!r} is still Initializing")
    if status != "Active":
        reason = described.get("FailureReason")
        raise ConfigError(
            f"{where}: flow definition {name!r} is {status}, not Active"
            + (f" ({reason})" if reason else "")
            + f"; A2I starts human loops only on an Active flow definition (arn {arn})"
        )
    found = described.get("FlowDefinitionArn")
    if found != arn:
        raise ConfigError(
            f"{where}: {arn} is not the flow definition {name!r} the router reaches: that one "
            f"is {found} (aws.region and the account of the router's credentials decide)"
        )
