"""The AWS resources (``deploy/aws/``): cfn-lint on the template as written and as packaged,
the packaging step, and the properties that matter checked on the parsed template: least
privilege, no public access, encrypted queues with dead-letter queues, the rule's flow
definition, Outputs that name real settings fields, and (on MSK) one Kafka user per role.

The stack without its task UI is also deployed into moto (in-process): the outputs resolve
into valid settings, the queues have their DLQs and keys, and the rule delivers this flow's
status events and no other's. moto builds no bucket or queue policies and ignores the bucket's
notification, and enforces no IAM or KMS policy: those are checked on the parsed template only.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import typing
from collections.abc import Iterator
from importlib.resources import files as resources_of
from pathlib import Path
from typing import Any

import boto3
import moto
import pytest
from cfnlint.decode import cfn_yaml
from prometheus_client import CollectorRegistry

from stream_router.backends import BackendContext, build_backend
from stream_router.metrics import ReviewMetrics
from stream_router.naming import loop_name
from stream_router.review.content import input_content
from stream_router.review.request import ReviewRequest
from stream_router.settings import ReviewSettings, Settings
from tests.deploy.conftest import DEPLOY, REPO, render
from tests.unit.review.requests import review_request

AWS_DIR = DEPLOY / "aws"
TEMPLATE = AWS_DIR / "stream-router.yaml"
PACKAGER = AWS_DIR / "package.py"
TASK_HTML = REPO / "config" / "review-task.liquid.html"
CFN_LINT = Path(sys.executable).with_name("cfn-lint")
FLOW_ARN = (
    "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}"
    ":flow-definition/${FlowDefinitionName}"
)
HUMAN_LOOPS = "arn:${AWS::Partition}:sagemaker:${AWS::Region}:${AWS::AccountId}:human-loop/*"


def load(path: Path) -> dict[str, Any]:
    template: dict[str, Any] = cfn_yaml.load(str(path))
    return template


def package(*args: str) -> subprocess.CompletedProcess[str]:
    """Run deploy/aws/package.py with ``args``."""
    return subprocess.run(
        [sys.executable, str(PACKAGER), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.fixture(scope="module")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cfn") / "stream-router.packaged.yaml"
    result = package("--output", str(out))
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load(TEMPLATE)


def resources(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: res["Properties"]
        for name, res in template["Resources"].items()
        if res["Type"] == kind
    }


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    found = document["Statement"]
    return found if isinstance(found, list) else [found]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


NO_VALUE = {"Ref": "AWS::NoValue"}


def resolved(value: Any, conditions: dict[str, bool]) -> Any:
    """``value`` with each ``Fn::If`` taken by ``conditions`` and ``AWS::NoValue`` dropped."""
    if isinstance(value, dict):
        if set(value) == {"Fn::If"}:
            name, then, otherwise = value["Fn::If"]
            return resolved(then if conditions[name] else otherwise, conditions)
        pairs = ((k, resolved(v, conditions)) for k, v in value.items())
        return {k: v for k, v in pairs if v != NO_VALUE}
    if isinstance(value, list):
        items = (resolved(v, conditions) for v in value)
        return [v for v in items if v != NO_VALUE]
    return value


def router_statements(template: dict[str, Any], **conditions: bool) -> list[dict[str, Any]]:
    """The RouterRole's permission statements as deployed under ``conditions``."""
    policies = resolved(template["Resources"]["RouterRole"]["Properties"]["Policies"], conditions)
    return [s for p in policies for s in statements(p["PolicyDocument"])]


ALL_CONDITIONS = [
    {"UsePodIdentity": pod, "UseMskScram": msk, "DeletesLoops": delete}
    for pod in (True, False)
    for msk in (True, False)
    for delete in (True, False)
]


@pytest.mark.parametrize("which", ["source", "packaged"])
def test_cfn_lint_reports_nothing(which: str, packaged: Path) -> None:
    path = TEMPLATE if which == "source" else packaged
    result = subprocess.run(
        [str(CFN_LINT), "--format", "parseable", str(path)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    # cfn-lint exits 0 only without errors, warnings and informational findings.
    assert result.returncode == 0, f"cfn-lint on {path}:\n{result.stdout}{result.stderr}"


def test_packaged_template_embeds_the_task_template_exactly(packaged: Path) -> None:
    (ui,) = resources(load(packaged), "AWS::SageMaker::HumanTaskUi").values()
    assert ui["UiTemplate"]["Content"] == TASK_HTML.read_text(encoding="utf-8")
    # The source carries only the marker, so deploying it unpackaged is visibly wrong.
    (marker,) = resources(load(TEMPLATE), "AWS::SageMaker::HumanTaskUi").values()
    assert marker["UiTemplate"]["Content"] == "@review-task.liquid.html@"


def test_packaging_refuses_a_packaged_template_and_an_oversized_task(
    packaged: Path, tmp_path: Path
) -> None:
    again = package("--template", str(packaged), "--output", str(tmp_path / "x"))
    assert again.returncode == 2
    assert "already packaged" in again.stderr
    big = tmp_path / "big.html"
    big.write_text("<p>x</p>" * 20_000, encoding="utf-8")
    oversized = package("--task", str(big), "--output", str(tmp_path / "y"))
    assert oversized.returncode == 2
    assert "at most 128000" in oversized.stderr
    assert not (tmp_path / "y").exists()


@pytest.mark.parametrize("deletes", [False, True], ids=["keeps-loops", "deletes-loops"])
def test_router_role_is_least_privilege(template: dict[str, Any], deletes: bool) -> None:
    found = router_statements(template, DeletesLoops=deletes)
    assert all(s["Effect"] == "Allow" for s in found)
    by_sid = {s["Sid"]: s for s in found}
    for statement in found:
        actions = as_list(statement["Action"])
        assert all("*" not in action for action in actions), statement["Sid"]
    # IAM gives no choice for ListHumanLoops (no resource-level permission): the only
    # statement on "*" holds that one action and nothing else.
    star = [s for s in found if "*" in as_list(s["Resource"])]
    assert [(s["Sid"], as_list(s["Action"])) for s in star] == [
        ("ListLoops", ["sagemaker:ListHumanLoops"])
    ]
    granted = {a for s in found for a in as_list(s["Action"])}
    # No StopHumanLoop: the router never stops a loop. DeleteHumanLoop only for a router that
    # deletes finished loops (review.delete_finished).
    assert granted == {
        "sagemaker:StartHumanLoop",
        "sagemaker:DescribeFlowDefinition",
        "sagemaker:DescribeHumanLoop",
        "sagemaker:ListHumanLoops",
        "s3:GetObject",
        "kms:Decrypt",
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    } | ({"sagemaker:DeleteHumanLoop"} if deletes else set())
    loops = {"Fn::Sub": HUMAN_LOOPS}
    assert (by_sid["DescribeLoops"]["Action"], by_sid["DescribeLoops"]["Resource"]) == (
        "sagemaker:DescribeHumanLoop",
        loops,
    )
    deleting = by_sid.get("DeleteFinishedLoops")
    assert deleting == (
        {"Sid": "DeleteFinishedLoops", "Effect": "Allow", "Action": "sagemaker:DeleteHumanLoop",
         "Resource": loops} if deletes else None
    )  # fmt: skip
    assert by_sid["StartLoopsOnThisFlow"]["Resource"] == {"Fn::Sub": FLOW_ARN}
    # The review role's start-up check (stream_router/aws/flows.py), on this flow only.
    assert by_sid["CheckThisFlowAtStart"]["Action"] == "sagemaker:DescribeFlowDefinition"
    assert by_sid["CheckThisFlowAtStart"]["Resource"] == {"Fn::Sub": FLOW_ARN}
    assert by_sid["ReadOutput"]["Resource"] == {"Fn::Sub": "${OutputBucket.Arn}/${OutputPrefix}/*"}
    assert by_sid["ReceiveFromWatcherQueues"]["Resource"] == [
        {"Fn::GetAtt": ["EventQueue", "Arn"]},
        {"Fn::GetAtt": ["OutputQueue", "Arn"]},
    ]


def test_delete_finished_loops_follows_the_setting_of_that_name(template: dict[str, Any]) -> None:
    parameter = template["Parameters"]["DeleteFinishedLoops"]
    assert parameter["Default"] == str(ReviewSettings().delete_finished).lower()
    assert "review.delete_finished" in parameter["Description"]
    assert "delete_finished" in ReviewSettings.model_fields
    assert template["Conditions"]["DeletesLoops"] == {
        "Fn::Equals": [{"Ref": "DeleteFinishedLoops"}, "true"]
    }


def review_service_account() -> tuple[str, str]:
    """(namespace, service account) of the review pods in the kustomize base."""
    docs = render(DEPLOY / "k8s" / "base")
    (review,) = [
        d
        for d in docs
        if d["kind"] == "Deployment"
        and d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "review"
    ]
    return review["metadata"]["namespace"], review["spec"]["template"]["spec"]["serviceAccountName"]


def test_router_role_trusts_only_the_review_service_account(template: dict[str, Any]) -> None:
    """EKS Pod Identity: the pods.eks.amazonaws.com principal of this account, and only for a
    session tagged with the cluster, namespace and service account the parameters name, whose
    defaults are the kustomize base's review pods. Otherwise exactly the named principal."""
    role = template["Resources"]["RouterRole"]["Properties"]["AssumeRolePolicyDocument"]
    (pod_identity,) = statements(resolved(role, {"UsePodIdentity": True}))
    assert pod_identity["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert pod_identity["Action"] == ["sts:AssumeRole", "sts:TagSession"]
    assert pod_identity["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": {"Ref": "AWS::AccountId"},
            "aws:RequestTag/eks-cluster-arn": {"Ref": "EksClusterArn"},
            "aws:RequestTag/kubernetes-namespace": {"Ref": "RouterNamespace"},
            "aws:RequestTag/kubernetes-service-account": {"Ref": "RouterServiceAccount"},
        }
    }
    parameters = template["Parameters"]
    namespace, account = review_service_account()
    assert parameters["RouterNamespace"]["Default"] == namespace
    assert parameters["RouterServiceAccount"]["Default"] == account
    assert account != "stream-router-ingest"
    for name, value in [("RouterNamespace", namespace), ("RouterServiceAccount", account)]:
        assert re.fullmatch(parameters[name]["AllowedPattern"], value), name
        assert not re.fullmatch(parameters[name]["AllowedPattern"], "*"), f"{name} takes a wildcard"
    cluster = parameters["EksClusterArn"]["AllowedPattern"]
    assert re.fullmatch(cluster, "arn:aws:eks:us-east-1:123456789012:cluster/ml")
    assert not re.fullmatch(cluster, "arn:aws:eks:us-east-1:123456789012:cluster/*")
    # Pod Identity without a cluster is refused before anything is created.
    rule = template["Rules"]["PodIdentityNamesItsCluster"]
    assert rule["RuleCondition"] == {"Fn::Equals": [{"Ref": "RouterTrustPrincipalArn"}, ""]}
    assert rule["Assertions"][0]["Assert"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "EksClusterArn"}, ""]}]
    }
    (named,) = statements(resolved(role, {"UsePodIdentity": False}))
    assert named["Principal"] == {"AWS": {"Ref": "RouterTrustPrincipalArn"}}
    assert named["Action"] == "sts:AssumeRole"


def iam_reference() -> dict[str, Any]:
    """cfn-lint's copy of the Service Authorization Reference (actions, resource types, keys)."""
    text = resources_of("cfnlint.data.AdditionalSpecs").joinpath("Policies.json").read_text()
    reference: dict[str, Any] = json.loads(text)
    return reference


def test_human_loop_permissions_cannot_be_narrowed_further() -> None:
    """Why DescribeHumanLoop and DeleteHumanLoop stay on human-loop/* (deploy/aws/README.md):
    the actions act on the human-loop resource type only, which has no condition keys (no tags,
    no flow definition), and its ARN holds only the loop's name, which starts with the event id,
    not with anything of this router's. ListHumanLoops has no resource type at all. A change in
    the reference (a new key) fails this test: narrow the policy then."""
    sagemaker = iam_reference()["sagemaker"]
    actions = {name.lower(): spec for name, spec in sagemaker["Actions"].items()}
    for action in ("DescribeHumanLoop", "DeleteHumanLoop", "StopHumanLoop"):
        assert actions[action.lower()] == {"Resources": ["human-loop"]}, action
    assert actions["listhumanloops"] == {}
    human_loop = sagemaker["Resources"]["human-loop"]
    assert human_loop.get("ConditionKeys", []) == []
    assert human_loop["ARNFormats"] == [
        "arn:${Partition}:sagemaker:${Region}:${Account}:human-loop/.*"
    ]
    names = [loop_name(event, "2026-11-1") for event in ("evt-0042", "order-7", "zz-1", "42")]
    assert len({name[0] for name in names}) == len(names), "loop names share a first character"
    readme = (AWS_DIR / "README.md").read_text(encoding="utf-8")
    assert "no condition keys" in readme
    assert "stream_router/naming.py" in readme


def test_the_router_never_stops_a_loop() -> None:
    """RouterRole has no StopHumanLoop because nothing outside the sandbox calls a backend's
    ``stop(name)``; a call added later fails here, naming where, so the permission comes with it."""
    calls = []
    for path in sorted((REPO / "stream_router").rglob("*.py")):
        if "sandbox" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "stop"
                and (node.args or node.keywords)
            ):
                calls.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert calls == [], (
        f"StopHumanLoop is not granted (deploy/aws), yet stop(...) is called: {calls}"
    )


def test_flow_definition_role_trusts_sagemaker_of_this_account_only(
    template: dict[str, Any],
) -> None:
    role = template["Resources"]["FlowDefinitionRole"]["Properties"]
    (trust,) = statements(role["AssumeRolePolicyDocument"])
    assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}
    assert trust["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    granted = [s for p in role["Policies"] for s in statements(p["PolicyDocument"])]
    assert all("*" not in as_list(s["Resource"]) for s in granted)


def test_buckets_are_private_encrypted_and_tls_only(template: dict[str, Any]) -> None:
    buckets = resources(template, "AWS::S3::Bucket")
    assert set(buckets) == {"OutputBucket", "AccessLogBucket"}
    for name, bucket in buckets.items():
        block = bucket["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"),
            True,
        ), name
        assert bucket["VersioningConfiguration"] == {"Status": "Enabled"}, name
        assert bucket["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    (sse,) = buckets["OutputBucket"]["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert sse["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "aws:kms",
        "KMSMasterKeyID": {"Fn::GetAtt": ["Key", "Arn"]},
    }
    policies = {
        p["Bucket"]["Ref"]: p for p in resources(template, "AWS::S3::BucketPolicy").values()
    }
    assert set(policies) == set(buckets)
    for name, policy in policies.items():
        denies = [s for s in statements(policy["PolicyDocument"]) if s["Effect"] == "Deny"]
        assert any(
            s["Condition"] == {"Bool": {"aws:SecureTransport": "false"}} and s["Action"] == "s3:*"
            for s in denies
        ), name
        allows = [s for s in statements(policy["PolicyDocument"]) if s["Effect"] == "Allow"]
        assert all(s["Principal"] != "*" for s in allows), name


def test_every_queue_is_encrypted_and_has_a_dead_letter_queue(template: dict[str, Any]) -> None:
    queues = resources(template, "AWS::SQS::Queue")
    assert all(q["KmsMasterKeyId"] == {"Ref": "Key"} for q in queues.values())
    dead = {n for n, q in queues.items() if "RedrivePolicy" not in q}
    live = set(queues) - dead
    assert live == {"EventQueue", "OutputQueue"}
    targets = {queues[n]["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0] for n in live}
    assert targets == dead
    assert len(dead) == len(live)


def test_queue_policies_admit_only_the_rule_and_the_bucket(template: dict[str, Any]) -> None:
    policies = {
        p["Queues"][0]["Ref"]: p for p in resources(template, "AWS::SQS::QueuePolicy").values()
    }
    (event,) = statements(policies["EventQueue"]["PolicyDocument"])
    assert event["Principal"] == {"Service": "events.amazonaws.com"}
    assert event["Action"] == "sqs:SendMessage"
    # The rule's target dead-letter queue is written by EventBridge too.
    assert policies["EventQueue"]["Queues"] == [
        {"Ref": "EventQueue"},
        {"Ref": "EventDeadLetterQueue"},
    ]
    assert template["Resources"]["StatusRule"]["Properties"]["Targets"][0]["DeadLetterConfig"] == {
        "Arn": {"Fn::GetAtt": ["EventDeadLetterQueue", "Arn"]}
    }
    assert event["Condition"] == {
        "ArnEquals": {"aws:SourceArn": {"Fn::GetAtt": ["StatusRule", "Arn"]}}
    }
    (output,) = statements(policies["OutputQueue"]["PolicyDocument"])
    assert output["Principal"] == {"Service": "s3.amazonaws.com"}
    assert output["Action"] == "sqs:SendMessage"
    assert output["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    bucket_name = template["Resources"]["OutputBucket"]["Properties"]["BucketName"]["Fn::Sub"]
    assert output["Condition"]["ArnEquals"]["aws:SourceArn"] == {
        "Fn::Sub": f"arn:${{AWS::Partition}}:s3:::{bucket_name}"
    }


def test_output_notification_targets_the_queue_after_its_policy(template: dict[str, Any]) -> None:
    bucket = template["Resources"]["OutputBucket"]
    assert bucket["DependsOn"] == "OutputQueuePolicy"
    (notify,) = bucket["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    assert notify["Event"] == "s3:ObjectCreated:*"
    assert notify["Queue"] == {"Fn::GetAtt": ["OutputQueue", "Arn"]}
    rules = {r["Name"]: r["Value"] for r in notify["Filter"]["S3Key"]["Rules"]}
    assert rules == {"prefix": {"Fn::Sub": "${OutputPrefix}/"}, "suffix": "output.json"}


def test_status_rule_matches_this_flow_definition(template: dict[str, Any]) -> None:
    rule = template["Resources"]["StatusRule"]["Properties"]
    assert rule["EventPattern"] == {
        "source": ["aws.sagemaker"],
        "detail-type": ["SageMaker A2I HumanLoop Status Change"],
        "detail": {"flowDefinitionArn": [{"Fn::Sub": FLOW_ARN}]},
    }
    (target,) = rule["Targets"]
    assert target["Arn"] == {"Fn::GetAtt": ["EventQueue", "Arn"]}
    assert template["Outputs"]["FlowDefinitionArn"]["Value"] == {"Fn::Sub": FLOW_ARN}


def settings_paths(model: type[Any], prefix: str = "") -> Iterator[str]:
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        yield path
        annotation = field.annotation
        if isinstance(annotation, type) and hasattr(annotation, "model_fields"):
            yield from settings_paths(annotation, f"{path}.")
        args = getattr(annotation, "__args__", ())
        if typing.get_origin(annotation) is typing.Union:  # a section chosen by name
            for member in args:
                if hasattr(member, "model_fields"):
                    yield from settings_paths(member, f"{path}.")
        elif args and isinstance(args[0], type) and hasattr(args[0], "model_fields"):
            yield from settings_paths(args[0], f"{path}[].")


def test_outputs_name_real_settings_fields(template: dict[str, Any]) -> None:
    known = set(settings_paths(Settings))
    named = {
        name: out["Description"].removeprefix("Settings: ").split(", ")
        for name, out in template["Outputs"].items()
        if out["Description"].startswith("Settings: ")
    }
    assert named == {
        "FlowDefinitionArn": ["policies.routes[].review_flow", "review.escalation_flows"],
        "EventQueueUrl": ["review.backend.event_queue_url"],
        "OutputQueueUrl": ["review.backend.output_queue_url"],
        "Region": ["aws.region"],
    }
    for paths in named.values():
        assert set(paths) <= known, set(paths) - known
    readme = (AWS_DIR / "README.md").read_text(encoding="utf-8")
    for name, paths in named.items():
        assert name in readme
        assert all(p in readme for p in paths)


def test_flow_definition_input_output_is_complete_json(template: dict[str, Any]) -> None:
    text, variables = template["Outputs"]["FlowDefinitionInput"]["Value"]["Fn::Sub"]
    names = set(re.findall(r"\$\{([^}]+)\}", text))
    filled = json.loads(re.sub(r"\$\{[^}]+\}", "1", text))
    assert set(filled) == {"FlowDefinitionName", "RoleArn", "HumanLoopConfig", "OutputConfig"}
    assert "HumanLoopActivationConfig" not in filled
    assert set(filled["OutputConfig"]) == {"S3OutputPath", "KmsKeyId"}
    assert names <= set(variables) | set(template["Parameters"]) | {"OutputBucket"}


def test_task_template_shows_only_what_the_starter_sends_and_yields_the_answer_path() -> None:
    # The Liquid and markup, without the explanatory comment at the top.
    html = re.sub(r"<!--.*?-->", "", TASK_HTML.read_text(encoding="utf-8"), flags=re.S)
    assert "skip_autoescape" not in html
    # Liquid parses comments too: an output tag there must be a real one.
    assert "{{ }}" not in TASK_HTML.read_text(encoding="utf-8")
    fields = dict(review_request("e1").fields)
    fields["prediction"] = {**fields["prediction"], "scores": {"cat": 0.4, "dog": 0.6}}
    content = input_content(ReviewRequest.from_fields(fields), [], attempt=1)
    used = re.findall(r"task\.input((?:\.[a-z_]+)+)", html)
    assert used
    for path in used:
        node: Any = content
        for key in path.strip(".").split("."):
            assert isinstance(node, dict), path
            assert key in node, f"task.input{path} is not in InputContent"
            node = node[key]
    outputs = re.findall(r"\{\{(.*?)\}\}", html, flags=re.S)
    assert all(
        o.strip().startswith(("task.input.", "pair[", "fallback_categories")) for o in outputs
    ), outputs
    # The label element's name is the first key of the default answer path.
    first = ReviewSettings().answer_path.split(".")[0]
    assert re.search(rf'<crowd-classifier\s+name="{first}"', html)


# moto's CloudFormation has no HumanTaskUi, bucket or queue policies, and ignores the bucket's
# notification: only the rest is deployed, and only what moto really builds is asserted.
@pytest.mark.filterwarnings("ignore:Tried to parse:UserWarning")
def test_stack_without_task_ui_deploys_in_moto_and_its_outputs_resolve() -> None:
    body = json.loads(json.dumps(load(TEMPLATE)))
    del body["Resources"]["TaskUi"]
    del body["Outputs"]["FlowDefinitionInput"]
    workteam = "arn:aws:sagemaker:us-east-1:123456789012:workteam/private-crowd/reviewers"
    cluster = "arn:aws:eks:us-east-1:123456789012:cluster/ml"
    with moto.mock_aws():
        cfn = boto3.client("cloudformation", region_name="us-east-1")
        parameters = {
            "WorkteamArn": workteam,
            "EksClusterArn": cluster,
            "RouterNamespace": "ml-review",
        }
        cfn.create_stack(
            StackName="stream-router",
            TemplateBody=json.dumps(body),
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            Capabilities=["CAPABILITY_IAM"],
        )
        (stack,) = cfn.describe_stacks(StackName="stream-router")["Stacks"]
        assert stack["StackStatus"] == "CREATE_COMPLETE"
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        flow = outputs["FlowDefinitionArn"]
        assert (
            flow == "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/stream-router-review"
        )
        sqs = boto3.client("sqs", region_name="us-east-1")
        for key in ("EventQueueUrl", "OutputQueueUrl"):
            attrs = sqs.get_queue_attributes(QueueUrl=outputs[key], AttributeNames=["All"])
            redrive = json.loads(attrs["Attributes"]["RedrivePolicy"])
            assert redrive["deadLetterTargetArn"].endswith("-dlq"), key
            assert attrs["Attributes"]["KmsMasterKeyId"], key
        events = boto3.client("events", region_name="us-east-1")
        (rule,) = events.list_rules(NamePrefix="stream-router-a2i-status")["Rules"]

        # The rule delivers this flow's status events to the event queue, and no other flow's.
        for flow_arn in (flow + "-other", flow):
            detail = {"flowDefinitionArn": flow_arn, "humanLoopStatus": "Completed"}
            entry = {
                "Source": "aws.sagemaker",
                "DetailType": "SageMaker A2I HumanLoop Status Change",
                "Detail": json.dumps(detail),
            }
            assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0
        received = sqs.receive_message(
            QueueUrl=outputs["EventQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=0
        )["Messages"]
        assert [json.loads(m["Body"])["detail"]["flowDefinitionArn"] for m in received] == [flow]
        assert rule["Name"] == "stream-router-a2i-status"
        settings = Settings.model_validate(
            {
                "aws": {"region": outputs["Region"]},
                "review": {
                    "backend": {
                        "name": "a2i",
                        "event_queue_url": outputs["EventQueueUrl"],
                        "output_queue_url": outputs["OutputQueueUrl"],
                    }
                },
            }
        )
        build_backend(BackendContext(settings, ReviewMetrics(CollectorRegistry())))

        # The role's trust, with the parameters filled in: the example overlay's review pods.
        role_name = outputs["RouterRoleArn"].rsplit("/", 1)[1]
        trust = boto3.client("iam", region_name="us-east-1").get_role(RoleName=role_name)["Role"][
            "AssumeRolePolicyDocument"
        ]
        (statement,) = trust["Statement"]
        assert statement["Condition"]["StringEquals"] == {
            "aws:SourceAccount": "123456789012",
            "aws:RequestTag/eks-cluster-arn": cluster,
            "aws:RequestTag/kubernetes-namespace": "ml-review",
            "aws:RequestTag/kubernetes-service-account": "stream-router-review",
        }


def test_msk_gets_one_scram_user_per_router_role_when_asked(template: dict[str, Any]) -> None:
    """With MskClusterArn: a Kafka login per role, named as the Kubernetes Deployments log in,
    each an AmazonMSK_ secret under its own key and associated with the cluster; nothing of it
    without the parameter, and the router's AWS role cannot read them."""
    parameter = template["Parameters"]["MskClusterArn"]
    assert parameter["Default"] == ""
    assert template["Conditions"]["UseMskScram"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "MskClusterArn"}, ""]}]
    }
    kafka = {"KafkaCredentialsKey", "IngestKafkaSecret", "ReviewKafkaSecret", "KafkaScramSecrets"}
    for name in kafka:
        assert template["Resources"][name]["Condition"] == "UseMskScram", name
    secrets = resources(template, "AWS::SecretsManager::Secret")
    assert set(secrets) == {"IngestKafkaSecret", "ReviewKafkaSecret"}
    default_prefix = template["Parameters"]["NamePrefix"]["Default"]
    logins = {}
    for name, secret in secrets.items():
        role = name.removesuffix("KafkaSecret").lower()
        assert secret["Name"] == {"Fn::Sub": f"AmazonMSK_${{NamePrefix}}-{role}"}  # MSK's rule
        assert secret["KmsKeyId"] == {"Ref": "KafkaCredentialsKey"}  # a CMK, not the output's
        generated = secret["GenerateSecretString"]
        assert generated["GenerateStringKey"] == "password"
        username = json.loads(generated["SecretStringTemplate"]["Fn::Sub"])["username"]
        logins[role] = username.replace("${NamePrefix}", default_prefix)
    assert logins == {"ingest": "stream-router-ingest", "review": "stream-router-review"}
    docs = {
        dep["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]: dep
        for dep in render(DEPLOY / "k8s" / "base")
        if dep["kind"] == "Deployment"
    }
    for role, username in logins.items():
        env = {e["name"]: e.get("value") for e in docs[role]["spec"]["template"]["spec"]
               ["containers"][0]["env"]}  # fmt: skip
        assert env["STREAM_ROUTER_KAFKA__SASL_USERNAME"] == username
    (scram,) = resources(template, "AWS::MSK::BatchScramSecret").values()
    assert scram["ClusterArn"] == {"Ref": "MskClusterArn"}
    assert scram["SecretArnList"] == [{"Ref": "IngestKafkaSecret"}, {"Ref": "ReviewKafkaSecret"}]
    key = template["Resources"]["KafkaCredentialsKey"]["Properties"]
    assert key["EnableKeyRotation"] is True
    for conditions in ALL_CONDITIONS:
        found = router_statements(template, **conditions)
        actions = [a for s in found for a in as_list(s["Action"])]
        assert not any(a.startswith("secretsmanager:") for a in actions)
        assert all(
            {"Fn::GetAtt": ["KafkaCredentialsKey", "Arn"]} not in as_list(s["Resource"])
            for s in found
        )
