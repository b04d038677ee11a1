"""pytest fixtures for the sandbox.

Enable them with ``pytest_plugins = ["stream_router.sandbox.pytest_plugin"]`` in a conftest.

The broker is Apache Kafka unless ``--broker tansu`` (or ``STREAM_ROUTER_SANDBOX_BROKER=tansu``)
says otherwise. Tests never fall back to Tansu by themselves: without Java the Kafka broker fails
to start and so do the tests that need it.

Session-wide (started once, stopped at the end, never left running):

- ``sandbox_settings``: fast simulated reviewers and four flow definitions
  (``fast``, ``panel`` with three workers, ``never`` that always expires, ``slow`` for stops);
- ``sandbox``: the running :class:`~stream_router.sandbox.stack.Sandbox`;
- ``broker_kind``: ``"kafka"`` or ``"tansu"``, the broker the session runs on;
- ``sandbox_info``: its addresses, queue URLs and flow ARNs;
- ``label_studio_info``: the same sandbox with Label Studio added (its projects, one per flow
  definition, and the simulated annotators), started the first time a test asks for it.

Per test:

- ``sandbox_env``: the sandbox's AWS/Kafka variables set in ``os.environ`` for the test
  (``AWS_ENDPOINT_URL_SAGEMAKER`` among them: a router started with them checks its flow
  definitions at the emulator);
- ``a2i_faults``: the shared emulator's fault injection, reset to none after the test;
- ``a2i_emulator_factory``: a private emulator (own port and state dir) for tests that restart
  or break it, stopped after the test.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from stream_router.sandbox.a2i.launcher import A2IEmulator
from stream_router.sandbox.broker import BrokerKind
from stream_router.sandbox.settings import (
    Faults,
    FlowDefinition,
    Latency,
    Reviewers,
    SandboxSettings,
)
from stream_router.sandbox.stack import Sandbox, SandboxInfo


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--broker",
        choices=("kafka", "tansu"),
        default=os.environ.get("STREAM_ROUTER_SANDBOX_BROKER") or "kafka",
        help="the sandbox broker the integration tests run on (default: kafka)",
    )


def pytest_report_header(config: pytest.Config) -> str:
    return f"sandbox broker: {config.getoption('--broker')}"


def fast_settings() -> SandboxSettings:
    """Flow definitions whose simulated workers answer within about a second."""
    quick = Reviewers(
        pickup=Latency(distribution="uniform", median_s=0.3, spread=0.5),
        work=Latency(distribution="uniform", median_s=0.4, spread=0.5),
        error_rate=0.1,
    )
    return SandboxSettings(
        flow_definitions=[
            FlowDefinition(name="fast", reviewers=quick),
            FlowDefinition(name="panel", task_count=3, reviewers=quick),
            FlowDefinition(
                name="never",
                task_availability_lifetime_s=1.0,
                reviewers=quick.model_copy(update={"abandon_rate": 1.0}),
            ),
            FlowDefinition(
                name="slow",
                reviewers=quick.model_copy(
                    update={"pickup": Latency(distribution="fixed", median_s=300.0)}
                ),
            ),
        ],
        stop_settle_s=0.3,
    )


@pytest.fixture(scope="session")
def sandbox_settings() -> SandboxSettings:
    return fast_settings()


@pytest.fixture(scope="session")
def broker_kind(pytestconfig: pytest.Config) -> BrokerKind:
    kind: BrokerKind = pytestconfig.getoption("--broker")
    return kind


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def sandbox(
    sandbox_settings: SandboxSettings,
    broker_kind: BrokerKind,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Sandbox]:
    state_dir = tmp_path_factory.mktemp("sandbox")
    async with Sandbox(sandbox_settings, broker=broker_kind, state_dir=state_dir) as running:
        yield running


@pytest.fixture(scope="session")
def sandbox_info(sandbox: Sandbox) -> SandboxInfo:
    return sandbox.info()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def label_studio_info(sandbox: Sandbox) -> SandboxInfo:
    await sandbox.start_label_studio()
    return sandbox.info()


@pytest.fixture
def sandbox_env(sandbox_info: SandboxInfo, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    env = sandbox_info.env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest_asyncio.fixture
async def a2i_faults(sandbox: Sandbox) -> AsyncIterator[A2IEmulator]:
    """The shared emulator, for tests that inject faults; faults are cleared afterwards."""
    yield sandbox.a2i
    await sandbox.a2i.set_faults(**Faults().model_dump())


EmulatorFactory = Callable[..., Awaitable[A2IEmulator]]


@pytest_asyncio.fixture
async def a2i_emulator_factory(
    sandbox: Sandbox, sandbox_settings: SandboxSettings, tmp_path: Path
) -> AsyncIterator[EmulatorFactory]:
    started: list[A2IEmulator] = []

    async def make(settings: SandboxSettings | None = None, **kwargs: Any) -> A2IEmulator:
        emulator = A2IEmulator(
            settings or sandbox_settings,
            aws_endpoint_url=sandbox.moto.endpoint_url,
            state_dir=kwargs.pop("state_dir", tmp_path / f"a2i-{len(started)}"),
            **kwargs,
        )
        started.append(emulator)
        await emulator.start()
        return emulator

    yield make
    for emulator in started:
        await emulator.stop()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """``unique_name("loop")`` gives names no other test uses (valid A2I loop names)."""
    digest = hashlib.sha1(request.node.nodeid.encode(), usedforsecurity=False).hexdigest()[:8]
    counter = itertools.count()
    return lambda prefix: f"{prefix}-{digest}-{next(counter)}"
