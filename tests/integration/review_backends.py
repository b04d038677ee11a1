"""The review backends the end-to-end tests run on: what differs between A2I and Label Studio.

A test that takes the ``backend`` fixture runs once on the sandbox's A2I emulator and once on its
Label Studio; :class:`Backend` gives what the router's configuration and the checks need of
each: the flow a route names, the ``review`` and ``watchers`` settings, how many reviews the
backend holds for each name, and what each reviewer answered.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pytest

from stream_router.backends import signals_of
from stream_router.labelstudio.client import LabelStudioClient, name_filter
from stream_router.labelstudio.tasks import NAME_FIELD
from stream_router.sandbox.aws import client as sandbox_client
from stream_router.sandbox.process import free_port
from stream_router.sandbox.stack import SandboxInfo

BACKENDS = [
    pytest.param("a2i", id="a2i"),
    pytest.param("label-studio", id="label-studio", marks=pytest.mark.label_studio),
]


@dataclass(frozen=True)
class Backend:
    name: str  #: a2i or label-studio
    info: SandboxInfo

    @property
    def signals(self) -> tuple[str, ...]:
        """The completion watchers of the backend, each of which alone finishes reviews."""
        return signals_of(self.name)

    def flow(self, sandbox_flow: str) -> str:
        """What a route's review_flow says to send reviews to sandbox flow ``sandbox_flow``."""
        if self.name == "a2i":
            return self.info.flow_definition_arns[sandbox_flow]
        return sandbox_flow

    def review_settings(self) -> dict[str, Any]:
        """The ``review`` settings selecting this backend (every sandbox flow configured)."""
        if self.name == "a2i":
            return {
                "backend": {
                    "name": "a2i",
                    "event_queue_url": self.info.event_queue_url,
                    "output_queue_url": self.info.output_queue_url,
                    "wait_time_s": 1,
                }
            }
        return {
            "backend": {
                "name": "label-studio",
                "url": self.info.label_studio_url,
                "api_token": self.info.label_studio_token,
                "projects": {
                    flow: {
                        "project": project_id,
                        "annotations_per_task": 3 if flow == "panel" else 1,
                        "deadline_s": 2.0 if flow == "never" else 600.0,
                    }
                    for flow, project_id in self.info.label_studio_projects.items()
                },
                "webhook": {"port": free_port()},
            },
        }

    async def reviews(self, flow: str, names: Iterable[str]) -> Counter[str]:
        """How many reviews (A2I human loops, Label Studio tasks) ``flow`` holds per name."""
        wanted = set(names)
        found: Counter[str] = Counter()
        if self.name == "a2i":
            a2i = sandbox_client(
                "sagemaker-a2i-runtime", self.info.a2i_endpoint_url, self.info.region
            )
            paginator = a2i.get_paginator("list_human_loops")
            arn = self.info.flow_definition_arns[flow]
            for page in paginator.paginate(FlowDefinitionArn=arn):
                for summary in page["HumanLoopSummaries"]:
                    if summary["HumanLoopName"] in wanted:
                        found[summary["HumanLoopName"]] += 1
            a2i.close()
            return found
        project = self.info.label_studio_projects[flow]
        assert self.info.label_studio_url
        assert self.info.label_studio_token
        async with LabelStudioClient(
            self.info.label_studio_url, self.info.label_studio_token
        ) as ls:
            for name in wanted:
                async for task in ls.tasks(project, query=name_filter(NAME_FIELD, name)):
                    if task["data"][NAME_FIELD] == name:
                        found[name] += 1
        return found

    async def one_review_each(
        self, flow: str, names: Iterable[str], *, timeout_s: float
    ) -> Counter[str]:
        """:meth:`reviews` once no name has more than one (the router removes duplicates as
        it sees them), or as they are at ``timeout_s``."""
        wanted = set(names)
        deadline = time.monotonic() + timeout_s
        while True:
            found = await self.reviews(flow, wanted)
            if max(found.values(), default=0) <= 1 or time.monotonic() > deadline:
                return found
            await asyncio.sleep(0.5)  # the backend's state, polled: nothing to await

    async def answers(self, envelope: dict[str, Any]) -> list[str]:
        """The labels the backend recorded for a reviewed envelope's review, in its order."""
        review = envelope["review"]
        if self.name == "a2i":
            a2i = sandbox_client(
                "sagemaker-a2i-runtime", self.info.a2i_endpoint_url, self.info.region
            )
            described = a2i.describe_human_loop(HumanLoopName=review["loop_name"])
            a2i.close()
            uri = described["HumanLoopOutput"]["OutputS3Uri"]
            s3 = sandbox_client("s3", self.info.aws_endpoint_url, self.info.region)
            bucket, _, key = uri.removeprefix("s3://").partition("/")
            output = json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            s3.close()
            assert output["inputContent"]["_identity"]["event_id"] == envelope["event_id"]
            return [a["answerContent"]["label"]["label"] for a in output["humanAnswers"]]
        assert self.info.label_studio_url
        assert self.info.label_studio_token
        async with LabelStudioClient(
            self.info.label_studio_url, self.info.label_studio_token
        ) as ls:
            project = self.info.label_studio_projects["fast"]
            query = name_filter(NAME_FIELD, review["loop_name"])
            [task] = [t async for t in ls.tasks(project, query=query)]
            full = await ls.task(int(task["id"]))
        content = full["data"]["content"]
        assert content["_identity"]["event_id"] == envelope["event_id"]
        kept = sorted(
            (a for a in full["annotations"] if not a["was_cancelled"]),
            key=lambda a: (a["created_at"], a["id"]),
        )
        return [a["result"][0]["value"]["choices"][0] for a in kept]
