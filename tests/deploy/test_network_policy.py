"""The NetworkPolicies, read the way a network plugin applies them.

Policies selecting a pod add up; a pod selected by a policy of a type (Ingress, Egress) gets only
what some rule of that type allows. ``audit`` takes the rendered manifests and one role's pods,
gathers every rule that applies to them, and lists what is wrong:

- either direction left open (no policy of that type selects the pods);
- an ingress rule admitting every source or every port, or a source that is not one namespace's
  labelled pods (a namespace alone, an empty selector, an address block);
- ingress on anything but the metrics port (and, with the Label Studio backend, the review
  role's webhook port);
- an egress rule without destinations or without ports;
- egress other than DNS to the cluster's DNS pods, the Kafka brokers on the ports of
  ``kafka.bootstrap_servers``, and for the review role its backend: with A2I, HTTPS and the EKS
  Pod Identity agent (never the instance metadata service), with Label Studio its pods; ingest
  reaches neither;
- any address block wider than a /8 on another port than HTTPS.

The expected ports come from what the pods run with (their settings, their container ports),
not from the policies. The audit is shown failing on policies that open the metrics port to
every pod or lack egress rules.
"""

from __future__ import annotations

import copy
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate
import pytest

from stream_router.labelstudio.settings import LabelStudioSettings, LabelStudioWebhook
from tests.deploy.conftest import DEPLOY, render
from tests.deploy.test_kubernetes import (
    K8S_VERSIONS,
    KUSTOMIZATIONS,
    ROLES,
    container,
    deployment,
    objects,
    pod_settings,
    selects,
)

Docs = list[dict[str, Any]]
COMPONENT = DEPLOY / "k8s" / "components" / "label-studio"
POD_IDENTITY_AGENT = {"169.254.170.23/32", "fd00:ec2::23/128"}
INSTANCE_METADATA = ipaddress.ip_address("169.254.169.254")
HTTPS = (443, "TCP")
AGENT = (80, "TCP")
DNS = {(53, "UDP"), (53, "TCP")}


def kafka_ports(bootstrap_servers: str) -> set[tuple[int, str]]:
    return {(int(server.rsplit(":", 1)[1]), "TCP") for server in bootstrap_servers.split(",")}


def label_selector(selector: dict[str, Any] | None) -> dict[str, str]:
    """A selector's labels; ``{}`` for a missing or empty one (which selects everything)."""
    if not selector:
        return {}
    assert set(selector) <= {"matchLabels"}, f"only matchLabels is audited: {selector}"
    labels: dict[str, str] = selector.get("matchLabels") or {}
    return labels


def applying(docs: Docs, labels: dict[str, str]) -> list[dict[str, Any]]:
    """The NetworkPolicies whose podSelector selects pods with ``labels``."""
    return [
        policy
        for policy in objects(docs, "NetworkPolicy")
        if selects(label_selector(policy["spec"].get("podSelector")), labels)
    ]


def selector_peer(peer: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]] | str:
    """(namespace labels, pod labels) of a peer naming both, else what the peer admits."""
    if "ipBlock" in peer:
        return f"the addresses {peer['ipBlock']['cidr']}"
    if "namespaceSelector" not in peer:
        return "pods of the policy's own namespace, whichever sends"
    namespaces = label_selector(peer["namespaceSelector"])
    pods = label_selector(peer.get("podSelector"))
    if not namespaces:
        return "every namespace"
    if not pods:
        return f"every pod of the namespaces {namespaces}"
    return namespaces, pods


def resolve(port: int | str, container_ports: dict[str, int]) -> int | None:
    return port if isinstance(port, int) else container_ports.get(port)


def wide(cidr: str) -> bool:
    network = ipaddress.ip_network(cidr)
    return network.prefixlen < (8 if network.version == 4 else 32)


def reaches(block: dict[str, Any], address: ipaddress.IPv4Address) -> bool:
    network = ipaddress.ip_network(block["cidr"])
    if network.version != address.version or address not in network:
        return False
    return not any(address in ipaddress.ip_network(cut) for cut in block.get("except", []))


Allowed = dict[tuple[int, str], list[dict[str, Any]]]  #: (port, protocol) -> destinations


def of_type(policies: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [p for p in policies if kind in p["spec"].get("policyTypes", [])]


def isolation(policies: list[dict[str, Any]], role: str) -> list[str]:
    """Both directions isolated, each policy saying which it isolates."""
    problems = [
        f"{p['metadata']['name']}: no policyTypes (the default depends on the rules present)"
        for p in policies
        if not p["spec"].get("policyTypes")
    ]
    for kind in ("Ingress", "Egress"):
        if not of_type(policies, kind):
            problems.append(f"{role}: {kind.lower()} is open: no policy of type {kind} selects it")
    return problems


def ingress(policies: list[dict[str, Any]], ports: dict[str, int]) -> tuple[set[int], list[str]]:
    """The pod ports some ingress rule opens, and the rules that admit too much."""
    opened: set[int] = set()
    problems: list[str] = []
    for policy in of_type(policies, "Ingress"):
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            if not rule.get("from"):
                problems.append(f"{name}: an ingress rule without `from` admits every source")
            elif not rule.get("ports"):
                problems.append(f"{name}: an ingress rule without `ports` admits every port")
            else:
                admits = [selector_peer(peer) for peer in rule["from"]]
                problems += [
                    f"{name}: an ingress rule admits {a}" for a in admits if isinstance(a, str)
                ]
                for entry in rule["ports"]:
                    number = resolve(entry["port"], ports)
                    if number is None:
                        problems.append(f"{name}: the pods have no port {entry['port']}")
                    else:
                        opened.add(number)
    return opened, problems


def egress(policies: list[dict[str, Any]]) -> tuple[Allowed, list[str]]:
    """(port, protocol) -> the destinations egress rules allow; the rules allowing too much."""
    allowed: Allowed = {}
    problems: list[str] = []
    for policy in of_type(policies, "Egress"):
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("egress", []):
            if not rule.get("to"):
                problems.append(f"{name}: an egress rule without `to` reaches every address")
                continue
            if not rule.get("ports"):
                problems.append(f"{name}: an egress rule without `ports` reaches every port")
                continue
            reached = [selector_peer(p) for p in rule["to"] if "ipBlock" not in p]
            problems += [
                f"{name}: an egress rule reaches {r}" for r in reached if isinstance(r, str)
            ]
            for entry in rule["ports"]:
                if not isinstance(entry["port"], int) or "endPort" in entry:
                    problems.append(f"{name}: egress port {entry['port']} is not one number")
                    continue
                key = (entry["port"], entry.get("protocol", "TCP"))
                allowed.setdefault(key, []).extend(rule["to"])
    return allowed, problems


def addresses(allowed: Allowed, role: str) -> list[str]:
    """Wide address blocks only on HTTPS; the instance metadata service never."""
    problems = []
    for (port, protocol), peers in sorted(allowed.items()):
        for block in (peer["ipBlock"] for peer in peers if "ipBlock" in peer):
            if wide(block["cidr"]) and (port, protocol) != HTTPS:
                problems.append(f"{role}: {block['cidr']} reachable on {port}/{protocol}")
            if port == AGENT[0] and reaches(block, INSTANCE_METADATA):
                problems.append(f"{role}: the instance metadata service is reachable")
    return problems


def destinations(
    allowed: Allowed, role: str, backend: str, kafka: set[tuple[int, str]]
) -> list[str]:
    """DNS and Kafka for both roles; the review backend's endpoints for review only."""
    problems = []
    for key in sorted(DNS):
        namespaces = {
            label_selector(p.get("namespaceSelector")).get("kubernetes.io/metadata.name")
            for p in allowed.get(key, [])
        }
        if namespaces != {"kube-system"}:
            problems.append(f"{role}: DNS {key} not to kube-system's DNS pods only")
    problems += [
        f"{role}: the Kafka brokers' port {key} is not reachable"
        for key in sorted(kafka)
        if key not in allowed
    ]
    a2i = role == "review" and backend == "a2i"
    if (HTTPS in allowed) != a2i:
        problems.append(f"{role} ({backend}): HTTPS to AWS {'missing' if a2i else 'allowed'}")
    agent = {p.get("ipBlock", {}).get("cidr") for p in allowed.get(AGENT, [])}
    if a2i and not agent >= POD_IDENTITY_AGENT:
        problems.append(f"{role}: the EKS Pod Identity agent {POD_IDENTITY_AGENT} unreachable")
    if not a2i and agent & POD_IDENTITY_AGENT:
        problems.append(f"{role} ({backend}): reaches AWS credentials it never uses")
    extra = set(allowed) - DNS - kafka - ({HTTPS, AGENT} if a2i else set())
    if role == "review" and backend == "label-studio":
        # Label Studio: one port, to pods (a selector), not to addresses.
        to_pods = {key for key in extra if all("ipBlock" not in p for p in allowed[key])}
        if len(to_pods) != 1:
            problems.append(f"{role}: not one port to Label Studio's pods: {sorted(to_pods)}")
        extra -= to_pods
    if extra:
        problems.append(f"{role}: egress to ports nothing here uses: {sorted(extra)}")
    return problems


def audit(
    docs: Docs, role: str, *, backend: str, kafka: set[tuple[int, str]], metrics_port: int
) -> list[str]:
    """What is wrong with the network policy of ``role``'s pods (see the module docstring)."""
    dep = deployment(docs, role)
    policies = applying(docs, dep["spec"]["template"]["metadata"]["labels"])
    ports = {p["name"]: p["containerPort"] for p in container(dep)["ports"]}
    problems = isolation(policies, role)
    opened, too_open = ingress(policies, ports)
    expected = {metrics_port}
    if role == "review" and backend == "label-studio":
        expected.add(LabelStudioWebhook().port)
    if opened != expected:
        problems.append(f"{role}: ingress on ports {sorted(opened)}, not {sorted(expected)}")
    allowed, too_wide = egress(policies)
    return [
        *problems,
        *too_open,
        *too_wide,
        *addresses(allowed, role),
        *destinations(allowed, role, backend, kafka),
    ]


def expectations(
    docs: Docs, role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """Kafka ports and metrics port of ``role``, from the settings its pods load."""
    folder = tmp_path / f"settings-{role}"
    folder.mkdir()
    settings = pod_settings(docs, role, folder, monkeypatch)
    return {
        "kafka": kafka_ports(settings.kafka.bootstrap_servers),
        "metrics_port": settings.metrics.port,
        "backend": settings.review.backend.name,
    }


@pytest.mark.parametrize("name", sorted(KUSTOMIZATIONS))
def test_each_role_gets_exactly_the_traffic_it_needs(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    docs = render(DEPLOY / "k8s" / name)
    for role in ROLES:
        assert audit(docs, role, **expectations(docs, role, tmp_path, monkeypatch)) == []
    pods = [dep["spec"]["template"]["metadata"]["labels"] for dep in objects(docs, "Deployment")]
    for policy in objects(docs, "NetworkPolicy"):
        selector = label_selector(policy["spec"]["podSelector"])
        assert any(selects(selector, labels) for labels in pods), policy["metadata"]["name"]


def compose(tmp_path: Path, overlay: str, *components: Path) -> Docs:
    """Render ``overlay`` with ``components`` added, as an installation's overlay would."""
    folder = tmp_path / "composed"
    folder.mkdir()
    relative = [os.path.relpath(path, folder) for path in (DEPLOY / "k8s" / overlay, *components)]
    (folder / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        f"namespace: {KUSTOMIZATIONS[overlay]}\n"
        f"resources:\n  - {relative[0]}\n"
        "components:\n" + "".join(f"  - {path}\n" for path in relative[1:]),
        encoding="utf-8",
    )
    return render(folder)


def test_the_label_studio_component_trades_aws_for_label_studio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With components/label-studio: Label Studio's pods may post to the review role's webhook
    port and the review role may call them; it reaches no AWS endpoint; ingest is unchanged."""
    docs = compose(tmp_path, "overlays/example", COMPONENT)
    for role in ROLES:
        expected = expectations(docs, role, tmp_path, monkeypatch)
        assert audit(docs, role, **{**expected, "backend": "label-studio"}) == []
    names = {policy["metadata"]["name"] for policy in objects(docs, "NetworkPolicy")}
    assert "stream-router-review-aws" not in names
    # The webhook port is the one the settings bind by default, and the Service reaches it.
    review = container(deployment(docs, "review"))
    ports = {p["name"]: p["containerPort"] for p in review["ports"]}
    assert ports["http-webhook"] == LabelStudioWebhook().port
    (service,) = [s for s in objects(docs, "Service") if s["metadata"]["name"].endswith("webhook")]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {"http-webhook"}
    # Its API port is the one Label Studio serves on by default (review.backend.url's).
    (policy,) = [
        p for p in objects(docs, "NetworkPolicy") if p["metadata"]["name"].endswith("studio")
    ]
    (rule,) = policy["spec"]["egress"]
    assert [p["port"] for p in rule["ports"]] == [urlsplit(LabelStudioSettings().url).port]
    for doc in docs:
        if doc["kind"] in {"NetworkPolicy", "Service", "Deployment"}:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)


@pytest.fixture(scope="module")
def base_docs() -> Docs:
    return render(DEPLOY / "k8s" / "base")


def base_with(docs: Docs, change: Callable[[dict[str, dict[str, Any]]], None]) -> Docs:
    """A copy of the base's manifests with ``change`` made to its policies (by name)."""
    changed = copy.deepcopy(docs)
    change({p["metadata"]["name"]: p for p in objects(changed, "NetworkPolicy")})
    return changed


#: What the base's pods run with (its router.yaml and the Deployments' environment).
BASE_EXPECTED: dict[str, Any] = {"backend": "a2i", "kafka": {(9093, "TCP")}, "metrics_port": 9108}


def test_the_failure_cases_start_from_the_base_as_its_settings_describe_it(
    base_docs: Docs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for role in ROLES:
        assert expectations(base_docs, role, tmp_path, monkeypatch) == BASE_EXPECTED
        assert audit(base_docs, role, **BASE_EXPECTED) == []


@pytest.mark.parametrize(
    ("source", "complaint"),
    [
        (None, "without `from` admits every source"),
        ({"podSelector": {}}, "pods of the policy's own namespace"),
        ({"namespaceSelector": {}}, "every namespace"),
        (
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}},
            "every pod of the namespaces",
        ),
        ({"ipBlock": {"cidr": "10.0.0.0/8"}}, "the addresses 10.0.0.0/8"),
    ],
)
def test_the_audit_refuses_a_metrics_port_open_to_more_than_prometheus(
    base_docs: Docs, source: dict[str, Any] | None, complaint: str
) -> None:
    def open_metrics(policies: dict[str, dict[str, Any]]) -> None:
        rule: dict[str, Any] = {"ports": [{"port": "http-metrics", "protocol": "TCP"}]}
        if source is not None:
            rule["from"] = [source]
        policies["stream-router"]["spec"]["ingress"] = [rule]

    docs = base_with(base_docs, open_metrics)
    for role in ROLES:
        assert any(complaint in problem for problem in audit(docs, role, **BASE_EXPECTED)), role


def test_the_audit_refuses_missing_or_open_egress(base_docs: Docs) -> None:
    def no_egress(policies: dict[str, dict[str, Any]]) -> None:
        for policy in policies.values():
            policy["spec"]["policyTypes"] = ["Ingress"] if "ingress" in policy["spec"] else []
            policy["spec"].pop("egress", None)

    docs = base_with(base_docs, no_egress)
    for role in ROLES:
        assert f"{role}: egress is open: no policy of type Egress selects it" in audit(
            docs, role, **BASE_EXPECTED
        )

    def open_egress(policies: dict[str, dict[str, Any]]) -> None:
        policies["stream-router"]["spec"]["egress"].append({})

    docs = base_with(base_docs, open_egress)
    assert any(
        "without `to` reaches every address" in p for p in audit(docs, "ingest", **BASE_EXPECTED)
    )

    def kafka_gone(policies: dict[str, dict[str, Any]]) -> None:
        policies["stream-router-kafka"]["spec"]["egress"] = [
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/16"}}], "ports": [{"port": 9092}]}
        ]

    docs = base_with(base_docs, kafka_gone)
    problems = audit(docs, "review", **BASE_EXPECTED)
    assert "review: the Kafka brokers' port (9093, 'TCP') is not reachable" in problems
    assert any("ports nothing here uses: [(9092, 'TCP')]" in p for p in problems)


def test_the_audit_refuses_aws_egress_for_ingest_and_the_metadata_service(
    base_docs: Docs,
) -> None:
    def ingest_gets_aws(policies: dict[str, dict[str, Any]]) -> None:
        policies["stream-router-review-aws"]["spec"]["podSelector"]["matchLabels"].pop(
            "app.kubernetes.io/component"
        )

    docs = base_with(base_docs, ingest_gets_aws)
    problems = audit(docs, "ingest", **BASE_EXPECTED)
    assert "ingest (a2i): HTTPS to AWS allowed" in problems
    assert "ingest (a2i): reaches AWS credentials it never uses" in problems

    def metadata_reachable(policies: dict[str, dict[str, Any]]) -> None:
        agent = policies["stream-router-review-aws"]["spec"]["egress"][1]
        agent["to"].append({"ipBlock": {"cidr": "169.254.0.0/16"}})

    docs = base_with(base_docs, metadata_reachable)
    assert "review: the instance metadata service is reachable" in audit(
        docs, "review", **BASE_EXPECTED
    )


def test_the_readme_explains_every_policy(base_docs: Docs) -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    names = {p["metadata"]["name"] for p in objects(base_docs, "NetworkPolicy")}
    names |= {"stream-router-review-label-studio"}
    for name in sorted(names):
        assert f"`{name}`" in readme, f"deploy/README.md does not explain NetworkPolicy {name}"
    assert "components/label-studio" in readme
