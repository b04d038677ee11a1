"""The Kubernetes manifests, rendered by kustomize and checked by what would run them.

- every rendered object validates offline against the Kubernetes OpenAPI schemas
  (kubernetes-validate, strict: unknown fields fail) for each version in ``K8S_VERSIONS``;
- the ServiceMonitor (a Prometheus Operator CRD, absent from those schemas) validates against
  ``SERVICE_MONITOR_SCHEMA`` below: the fields this project uses of monitoring.coreos.com/v1,
  unknown fields refused; so do the Strimzi KafkaUsers of ``kafka-users/`` against
  ``KAFKA_USER_SCHEMA`` (kafka.strimzi.io/v1beta2);
- each role logs in to Kafka as its own user, from its own Secret, and the KafkaUsers and
  deploy/README.md give each user exactly the ACLs of its role (``role_acls.py``);
- what matters when it runs: the roles' command lines parse with the real CLI, the probes ask
  the real endpoints on the port the settings give the process, the pods run as non-root with a
  read-only root, selectors find the pods, and the ConfigMap's configuration passes the project's
  own validation (as ``stream-router config check`` does) with the pod's environment.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import aiohttp
import jsonschema
import kubernetes_validate
import pytest
from prometheus_client import CollectorRegistry

from stream_router.backends import BackendContext, build_backend
from stream_router.cli import build_parser
from stream_router.health import HealthServer
from stream_router.metrics import ReviewMetrics
from stream_router.policies.routes import Routes
from stream_router.review.budget import UNLIMITED
from stream_router.review.shares import budget_notes, route_limits
from stream_router.settings import ENV_PREFIX, Settings, load_settings
from stream_router.supervision import Supervisor
from tests.deploy.conftest import DEPLOY, render
from tests.deploy.role_acls import Acl, readme_row, role_acls

K8S_VERSIONS = ("1.30.0", "1.37.0")  # oldest we claim, newest kubernetes-validate knows
KUSTOMIZATIONS = {"base": "stream-router", "overlays/example": "ml-review"}  # -> namespace
ROLES = ("ingest", "review")

DURATION = r"^(0|([0-9]+(ms|s|m|h|d|w|y))+)$"
LABEL_SELECTOR = {
    "type": "object",
    "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}},
    "required": ["matchLabels"],
    "additionalProperties": False,
}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "selector": LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["port"],
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string", "pattern": "^/"},
                            "scheme": {"enum": ["http", "https"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                        },
                    },
                },
            },
        },
    },
}


KAFKA_OPERATIONS = ["Read", "Write", "Create", "Delete", "Alter", "Describe", "ClusterAction",
                    "AlterConfigs", "DescribeConfigs", "IdempotentWrite", "All"]  # fmt: skip
KAFKA_ACL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["resource", "operations"],
    "additionalProperties": False,
    "properties": {
        "type": {"enum": ["allow", "deny"]},
        "host": {"type": "string"},
        "operations": {"type": "array", "minItems": 1, "items": {"enum": KAFKA_OPERATIONS}},
        "resource": {
            "type": "object",
            "required": ["type"],
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["topic", "group", "cluster", "transactionalId"]},
                "name": {"type": "string"},
                "patternType": {"enum": ["literal", "prefix"]},
            },
        },
    },
}
KAFKA_USER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "kafka.strimzi.io/v1beta2"},
        "kind": {"const": "KafkaUser"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace", "labels"],
            "properties": {"labels": {"type": "object", "required": ["strimzi.io/cluster"]}},
        },
        "spec": {
            "type": "object",
            "required": ["authentication", "authorization"],
            "additionalProperties": False,
            "properties": {
                "authentication": {
                    "type": "object",
                    "required": ["type"],
                    "additionalProperties": False,
                    "properties": {"type": {"enum": ["scram-sha-512", "tls", "tls-external"]}},
                },
                "authorization": {
                    "type": "object",
                    "required": ["type", "acls"],
                    "additionalProperties": False,
                    "properties": {
                        "type": {"const": "simple"},
                        "acls": {"type": "array", "items": KAFKA_ACL_SCHEMA},
                    },
                },
            },
        },
    },
}


@pytest.fixture(scope="module", params=sorted(KUSTOMIZATIONS))
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    name: str = request.param
    return name, render(DEPLOY / "k8s" / name)


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def deployment(docs: list[dict[str, Any]], role: str) -> dict[str, Any]:
    found = [
        doc
        for doc in objects(docs, "Deployment")
        if doc["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == role
    ]
    assert len(found) == 1, f"expected one Deployment of the {role} role, found {len(found)}"
    return found[0]


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def pod_labels(docs: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [dep["spec"]["template"]["metadata"]["labels"] for dep in objects(docs, "Deployment")]


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_against_the_schemas(
    rendered: tuple[str, list[dict[str, Any]]], version: str
) -> None:
    name, docs = rendered
    assert docs, f"{name} renders nothing"
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            jsonschema.validate(doc, SERVICE_MONITOR_SCHEMA)
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{where} is not valid Kubernetes {version}: {exc.message} at {exc.path}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: no schema in Kubernetes {version} ({exc}); unknown kind?")


def test_the_service_monitor_schema_rejects_a_misspelt_field() -> None:
    """The CRD check is not a rubber stamp: an unknown endpoint field fails it."""
    docs = render(DEPLOY / "k8s" / "base")
    monitor = objects(docs, "ServiceMonitor")[0]
    monitor["spec"]["endpoints"][0]["intervall"] = "30s"
    with pytest.raises(jsonschema.ValidationError, match="intervall"):
        jsonschema.validate(monitor, SERVICE_MONITOR_SCHEMA)


def test_strict_validation_rejects_a_misspelt_field() -> None:
    """The schema check is not a rubber stamp: an unknown Deployment field fails it."""
    dep = deployment(render(DEPLOY / "k8s" / "base"), "ingest")
    dep["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[0], strict=True)


def test_both_roles_run_the_real_command_line(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for role in ROLES:
        main = container(deployment(docs, role))
        args = build_parser().parse_args(main["args"])
        assert (args.command, args.role) == ("run", role)
        mounts = {mount["mountPath"]: mount["name"] for mount in main["volumeMounts"]}
        assert str(args.config.parent) in mounts, f"{role}: {args.config} is not on a volume"


def pod_settings(
    docs: list[dict[str, Any]], role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """The settings the role's process would load: its ConfigMap file plus its environment.

    A value from a Secret is replaced by a placeholder (the operator creates the Secret).
    """
    dep = deployment(docs, role)
    main = container(dep)
    args = build_parser().parse_args(main["args"])
    mount = next(m for m in main["volumeMounts"] if m["mountPath"] == str(args.config.parent))
    volume = next(
        v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"]
    )
    config_maps = {cm["metadata"]["name"]: cm for cm in objects(docs, "ConfigMap")}
    assert volume["configMap"]["name"] in config_maps, f"{role}: its ConfigMap is not rendered"
    data = config_maps[volume["configMap"]["name"]]["data"]
    config = tmp_path / role / args.config.name
    config.parent.mkdir()
    config.write_text(data[args.config.name], encoding="utf-8")
    for key in [key for key in os.environ if key.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for env in main.get("env", []):
        monkeypatch.setenv(env["name"], env.get("value", f"placeholder-for-{env['name']}"))
    return load_settings(config)


def test_the_config_map_passes_the_projects_own_validation(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, docs = rendered
    for role in ROLES:
        settings = pod_settings(docs, role, tmp_path, monkeypatch)
        assert Routes(settings.policies).routes, "no route: nothing would ever be reviewed"
        if role == "review":
            build_backend(BackendContext(settings, ReviewMetrics(CollectorRegistry())))
            # Every review route under a limit the configuration chose (not the default).
            assert UNLIMITED not in route_limits(settings).values()
            assert budget_notes(settings) == []


def test_every_environment_variable_names_a_real_setting(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, docs = rendered
    for role in ROLES:
        for env in container(deployment(docs, role)).get("env", []):
            name = env["name"]
            assert name.startswith(ENV_PREFIX), f"{role}: {name} is not a stream_router setting"
            section, _, field = name.removeprefix(ENV_PREFIX).lower().partition("__")
            assert section in Settings.model_fields, f"{role}: {name}: no section {section}"
            model = Settings.model_fields[section].annotation
            assert field in model.model_fields, f"{role}: {name}: no setting {section}.{field}"


def test_probes_ask_the_real_endpoints_on_the_port_the_process_serves(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, docs = rendered
    for role in ROLES:
        main = container(deployment(docs, role))
        settings = pod_settings(docs, role, tmp_path, monkeypatch)
        assert settings.metrics.enabled, f"{role}: metrics disabled, the probes would fail"
        # a pod's probes and scraper come from outside it: it must not bind loopback only
        everywhere = "0.0.0.0"  # noqa: S104
        assert settings.metrics.host == everywhere, f"{role}: binds {settings.metrics.host}"
        ports = {port["name"]: port["containerPort"] for port in main["ports"]}
        assert main["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert main["readinessProbe"]["httpGet"]["path"] == "/readyz"
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            port = main[probe]["httpGet"]["port"]
            assert ports.get(port, port) == settings.metrics.port, f"{role} {probe}: port {port}"


async def test_the_probed_and_scraped_paths_are_served() -> None:
    """The paths the manifests name, asked of the project's own HTTP server."""
    docs = render(DEPLOY / "k8s" / "base")
    paths = {
        container(dep)[probe]["httpGet"]["path"]
        for dep in objects(docs, "Deployment")
        for probe in ("startupProbe", "livenessProbe", "readinessProbe")
    }
    paths |= {ep["path"] for ep in objects(docs, "ServiceMonitor")[0]["spec"]["endpoints"]}
    server = HealthServer(Supervisor(60), CollectorRegistry(), "127.0.0.1", 0)
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            for path in sorted(paths):
                async with session.get(f"http://127.0.0.1:{server.port}{path}") as response:
                    assert response.status == 200, f"{path}: HTTP {response.status}"
    finally:
        await server.stop()


def test_pods_run_locked_down(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, docs = rendered
    for role in ROLES:
        dep = deployment(docs, role)
        pod = dep["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        main = container(dep)
        context = main["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= set(main["resources"])
        assert not re.search(r":latest$|^[^:]+$", main["image"]), f"{role}: unpinned image"
        volumes = {volume["name"]: volume for volume in pod["volumes"]}
        assert {mount["name"] for mount in main["volumeMounts"]} <= set(volumes)
        writable = [m["mountPath"] for m in main["volumeMounts"] if not m.get("readOnly")]
        assert all(
            "emptyDir" in volumes[m["name"]] for m in main["volumeMounts"] if not m.get("readOnly")
        )
        tmp = "/tmp"  # noqa: S108 (the container's own /tmp, an emptyDir)
        assert tmp in writable, f"{role}: no writable /tmp on a read-only root"
    for account in objects(docs, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_the_review_state_directory_is_writable(
    rendered: tuple[str, list[dict[str, Any]]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, docs = rendered
    settings = pod_settings(docs, "review", tmp_path, monkeypatch)
    main = container(deployment(docs, "review"))
    writable = [Path(m["mountPath"]) for m in main["volumeMounts"] if not m.get("readOnly")]
    data_dir = settings.review.data_dir
    assert data_dir.is_absolute(), f"review.data_dir {data_dir} depends on the working directory"
    assert any(data_dir.is_relative_to(mount) for mount in writable), f"{data_dir} is read-only"


def test_review_rollouts_never_run_more_instances_than_replicas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    """Each instance spends its own rate_per_s: a surge pod would exceed the account quota."""
    _, docs = rendered
    strategy = deployment(docs, "review")["spec"]["strategy"]
    assert strategy["type"] == "RollingUpdate"
    assert strategy["rollingUpdate"]["maxSurge"] == 0


def test_selectors_find_the_pods(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, docs = rendered
    pods = pod_labels(docs)
    for dep in objects(docs, "Deployment"):
        selector = dep["spec"]["selector"]["matchLabels"]
        assert selects(selector, dep["spec"]["template"]["metadata"]["labels"])
    budgets = objects(docs, "PodDisruptionBudget")
    assert len(budgets) == len(ROLES)
    for budget in budgets:
        matched = [
            labels for labels in pods if selects(budget["spec"]["selector"]["matchLabels"], labels)
        ]
        assert len(matched) == 1, f"PDB {budget['metadata']['name']} selects {len(matched)} roles"
    services = objects(docs, "Service")
    for service in services:
        matched = [labels for labels in pods if selects(service["spec"]["selector"], labels)]
        assert len(matched) == 1, f"Service {service['metadata']['name']} selects {len(matched)}"
        dep = next(
            d
            for d in objects(docs, "Deployment")
            if selects(service["spec"]["selector"], d["spec"]["template"]["metadata"]["labels"])
        )
        port_names = {port["name"] for port in container(dep)["ports"]}
        assert {port["targetPort"] for port in service["spec"]["ports"]} <= port_names
    monitor = objects(docs, "ServiceMonitor")[0]
    scraped = [
        s
        for s in services
        if selects(monitor["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
    ]
    assert len(scraped) == len(ROLES), "the ServiceMonitor does not find a Service per role"
    for service in scraped:
        names = {port["name"] for port in service["spec"]["ports"]}
        assert {ep["port"] for ep in monitor["spec"]["endpoints"]} <= names
    assert "namespaceSelector" not in monitor["spec"], "it would look beyond its namespace"
    namespaces = {doc["metadata"].get("namespace") for doc in docs if doc["kind"] != "Namespace"}
    assert namespaces == {KUSTOMIZATIONS[name]}


def test_secrets_are_referenced_never_committed_and_documented() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for name in KUSTOMIZATIONS:
        docs = render(DEPLOY / "k8s" / name)
        assert not objects(docs, "Secret"), f"{name} renders a Secret: secrets are not committed"
        for role in ROLES:
            for env in container(deployment(docs, role)).get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in readme, f"deploy/README.md omits Secret {ref['name']}"
                    assert ref["key"] in readme, f"deploy/README.md omits Secret key {ref['key']}"


def test_only_the_review_role_gets_the_documented_aws_identity() -> None:
    """The router role trusts EKS Pod Identity for one namespace and service account: the
    association both READMEs show names the example's namespace and the review's account."""
    docs = render(DEPLOY / "k8s" / "overlays" / "example")
    accounts = {
        role: deployment(docs, role)["spec"]["template"]["spec"]["serviceAccountName"]
        for role in ROLES
    }
    assert accounts["ingest"] != accounts["review"]
    namespace = KUSTOMIZATIONS["overlays/example"]
    association = (
        rf"--namespace {namespace}\s+"
        rf"--service-account {accounts['review']} --role-arn <RouterRoleArn>"
    )
    for readme in (DEPLOY / "README.md", DEPLOY / "aws" / "README.md"):
        text = readme.read_text(encoding="utf-8")
        assert re.search(association, text), f"{readme} lacks the association {association}"
        assert f"--service-account {accounts['ingest']}" not in text
    for account in objects(docs, "ServiceAccount"):
        # no IRSA annotation: the stack's RouterRole does not trust an OIDC provider
        assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})


def kafka_users() -> dict[str, dict[str, Any]]:
    """The Strimzi KafkaUsers of deploy/k8s/kafka-users, by user name."""
    return {doc["metadata"]["name"]: doc for doc in render(DEPLOY / "k8s" / "kafka-users")}


def granted(user: dict[str, Any]) -> set[Acl]:
    """A KafkaUser's ACLs (literal patterns, any host, allow: all this project writes)."""
    found = set()
    for acl in user["spec"]["authorization"]["acls"]:
        resource = acl["resource"]
        assert resource.get("patternType", "literal") == "literal", resource
        assert acl.get("host", "*") == "*", acl
        assert acl.get("type", "allow") == "allow", acl
        found.add(Acl(resource["type"], resource["name"], tuple(acl["operations"])))
    return found


def test_the_kafka_users_validate_and_a_misspelt_operation_does_not() -> None:
    users = kafka_users()
    assert users, "deploy/k8s/kafka-users renders nothing"
    for user in users.values():
        jsonschema.validate(user, KAFKA_USER_SCHEMA)
    user = next(iter(users.values()))
    user["spec"]["authorization"]["acls"][0]["operations"] = ["Raed"]
    with pytest.raises(jsonschema.ValidationError, match="Raed"):
        jsonschema.validate(user, KAFKA_USER_SCHEMA)


def test_each_role_logs_in_as_its_own_user_with_exactly_its_acls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per role: its own SASL user and Secret; the KafkaUser of that name and the README's
    table grant exactly ``role_acls`` of its configuration; the overlay uses the same topics."""
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    users = kafka_users()
    acls: dict[str, set[Acl]] = {}
    for name in sorted(KUSTOMIZATIONS):
        docs = render(DEPLOY / "k8s" / name)
        logins, secrets = {}, {}
        folder = tmp_path / name.replace("/", "-")
        folder.mkdir()
        for role in ROLES:
            settings = pod_settings(docs, role, folder, monkeypatch)
            assert settings.kafka.sasl_username is not None, f"{name} {role}: no Kafka user"
            logins[role] = settings.kafka.sasl_username
            env = {e["name"]: e for e in container(deployment(docs, role))["env"]}
            ref = env["STREAM_ROUTER_KAFKA__SASL_PASSWORD"]["valueFrom"]["secretKeyRef"]
            secrets[role] = ref["name"]
            expected = role_acls(settings, role)
            assert acls.setdefault(role, expected) == expected, f"{name}: other topics than base"
            user = users.get(logins[role])
            assert user is not None, f"no KafkaUser {logins[role]} ({name} {role})"
            assert user["metadata"]["labels"]["app.kubernetes.io/component"] == role
            assert granted(user) == expected, f"KafkaUser {logins[role]}"
            for acl in expected:
                row = readme_row(role, logins[role], acl)
                assert row in readme, f"deploy/README.md lacks the row {row}"
        assert logins["ingest"] != logins["review"], f"{name}: the roles share a Kafka user"
        assert secrets["ingest"] != secrets["review"], f"{name}: the roles share a Secret"
    assert set(users) == {f"stream-router-{role}" for role in ROLES}
    # What the split is for: only ingest writes review requests; ingest reads nothing of
    # the review role's.
    rows = [line for line in readme.splitlines() if line.startswith(("| ingest (", "| review ("))]
    assert len(rows) == sum(len(granted) for granted in acls.values()), "extra ACL rows"
    review_requests = next(a.name for a in acls["ingest"] if "review-requests" in a.name)
    assert not any(a.name == review_requests and "Write" in a.operations for a in acls["review"])
    assert {a.name for a in acls["ingest"]}.isdisjoint(
        {"stream-router-loop-events", "stream-router-review-ledger", "stream-router-review"}
    )
