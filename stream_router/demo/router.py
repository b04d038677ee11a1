"""The router as the demo runs it: its configuration for this sandbox, and its child process.

The demo writes a router YAML that joins the ``router`` section of the demo settings with what
only the running sandbox knows (broker address, queue URLs, region), a metrics port picked free
on loopback, and a review data directory in the demo's work directory. Flow names in
``review_flow`` and ``escalation_flows`` become the sandbox's ARNs. The router then runs as
``python -m stream_router.cli run --role all --config <that file>`` with the sandbox's
environment; it is ready once ingest owns its partitions (an INFO line of its log).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

from stream_router.demo.settings import DemoSettings
from stream_router.errors import ConfigError
from stream_router.sandbox.process import ManagedProcess
from stream_router.sandbox.stack import SandboxInfo
from stream_router.settings import Settings, load_settings, move_old_keys

READY = r"assigned \d+ partitions"


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _arn(flow: str, arns: dict[str, str]) -> str:
    return arns.get(flow, flow)


def router_config(
    demo: DemoSettings,
    info: SandboxInfo,
    *,
    metrics_port: int,
    data_dir: Path,
    backend: str = "a2i",
    webhook_port: int = 0,
) -> dict[str, Any]:
    """The router's configuration (as YAML data) for this demo run on this sandbox.

    With ``backend="label-studio"`` the reviews go to the sandbox's Label Studio: each flow
    definition is a project there (annotations per task: its task count; deadline: its task
    availability lifetime), and the completion signals are Label Studio's.
    """
    config = _merge(
        {
            "review": {"topic_partitions": demo.producer.topic_partitions},
            "topics": {"partitions": demo.producer.topic_partitions},
            "logging": {},
        },
        demo.router,
    )
    config = _merge(
        config,
        {
            "kafka": info.kafka_config(),
            "aws": {"region": info.region},
            "metrics": {"enabled": True, "host": "127.0.0.1", "port": metrics_port},
            "review": {"data_dir": str(data_dir)},
        },
    )
    config["logging"]["level"] = "INFO"  # the ready line is an INFO line
    try:
        config, _ = move_old_keys(config)  # the demo's router sections may be an older file's
    except ValueError as exc:
        raise ConfigError(f"the demo's router section: {exc}") from exc
    if backend == "label-studio":
        return _on_label_studio(config, demo, info, webhook_port)
    config["review"]["backend"] = {
        **_backend_section(config["review"], "a2i"),
        "event_queue_url": info.event_queue_url,
        "output_queue_url": info.output_queue_url,
    }
    arns = info.flow_definition_arns
    for route in config.get("policies", {}).get("routes", []):
        if isinstance(route, dict) and isinstance(route.get("review_flow"), str):
            route["review_flow"] = _arn(route["review_flow"], arns)
    flows = config.get("review", {}).get("escalation_flows", {})
    for route_name, flow in list(flows.items()):
        flows[route_name] = _arn(flow, arns)
    return config


def _on_label_studio(
    config: dict[str, Any], demo: DemoSettings, info: SandboxInfo, webhook_port: int
) -> dict[str, Any]:
    if not info.label_studio_url or not info.label_studio_token:
        raise ValueError("the sandbox runs no Label Studio: start it with backend label-studio")
    projects = {
        flow.name: {
            "project": info.label_studio_projects[flow.name],
            "annotations_per_task": flow.task_count,
            "deadline_s": flow.task_availability_lifetime_s,
        }
        for flow in demo.sandbox.flow_definitions
    }
    section = _backend_section(config["review"], "label-studio")
    config["review"]["backend"] = _merge(
        section,
        {
            "url": info.label_studio_url,
            "api_token": info.label_studio_token,
            "projects": projects,
            "webhook": {"port": webhook_port},
        },
    )
    config.get("watchers", {}).pop("enabled", None)  # Label Studio's own signals
    return config


def _backend_section(review: dict[str, Any], name: str) -> dict[str, Any]:
    """The demo's ``review.backend`` section when it is ``name``'s (else a new one)."""
    section = review.get("backend")
    if isinstance(section, str):
        section = {"name": section}
    if isinstance(section, dict) and section.get("name", "a2i") == name:
        return {**section, "name": name}
    return {"name": name}


def write_router_config(config: dict[str, Any], path: Path) -> Settings:
    """Write the YAML and load it back as the router will (validating it)."""
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return load_settings(path)


def router_process(config_path: Path, env: dict[str, str], log_path: Path) -> ManagedProcess:
    """``stream-router run --role all`` as a child process that logs to ``log_path``."""
    return ManagedProcess(
        "router",
        [sys.executable, "-m", "stream_router.cli", "run", "--role=all", f"--config={config_path}"],
        ready_pattern=READY,
        env=env,
        log_path=log_path,
        stop_timeout_s=60,
    )
