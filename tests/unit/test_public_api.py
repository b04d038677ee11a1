"""The public API: what ``stream_router`` exports, that it stays complete and cheap to import,
and that ``stream_router.testing.check_policy`` catches each broken rule of the policy contract.

The built-in policies passing ``check_policy`` is tested beside them
(``tests/unit/policies/test_builtin_contract.py``); the example plugin's own tests, which use
``stream_router.testing``, run here as a plugin author runs them.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, Field

import stream_router
from stream_router import EventPolicy, Policy, PolicyParams, Prediction, Verdict
from stream_router import testing as srt
from stream_router.testing import check_policy, make_prediction

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "tests" / "fixtures" / "plugin"

#: The modules a plugin author reads, and their public names that are not for users.
USER_MODULES: dict[str, frozenset[str]] = {
    "stream_router.policies.base": frozenset({"P"}),  # the TypeVar of Policy's generic params
    "stream_router.models": frozenset({"new_tuple"}),  # the hot path's NamedTuple builder
    "stream_router.errors": frozenset(),
}

#: What ``import stream_router`` (or its testing module) must not load: Kafka, AWS, analysis
#: and template libraries belong to the roles and commands that need them.
HEAVY = ("aiokafka", "faust", "mode", "aioboto3", "aiobotocore", "botocore", "numpy", "scipy",
         "matplotlib", "liquid")  # fmt: skip


def isort_order(name: str) -> tuple[int, str]:
    """ruff's RUF022 order: SCREAMING_CASE, then CamelCase, then the rest, each alphabetical."""
    if len(name) > 1 and name.isupper():
        return 0, name
    return (1 if name[0].isupper() else 2), name


def defined_public_names(module_name: str) -> set[str]:
    """Public names a module defines at top level (classes, functions, assignments)."""
    tree = ast.parse(inspect.getsource(importlib.import_module(module_name)))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return {name for name in names if not name.startswith("_")}


@pytest.mark.parametrize("module", [stream_router, srt], ids=lambda m: m.__name__)
def test_all_is_sorted_and_resolves(module: Any) -> None:
    exported = module.__all__
    assert exported == sorted(exported, key=isort_order)
    assert len(set(exported)) == len(exported)
    for name in exported:
        assert getattr(module, name) is not None, name
    star: dict[str, Any] = {}
    exec(f"from {module.__name__} import *", star)  # noqa: S102
    assert set(star) - {"__builtins__"} == set(exported)


@pytest.mark.parametrize("module_name", sorted(USER_MODULES))
def test_every_public_name_a_plugin_author_reads_is_exported(module_name: str) -> None:
    module = importlib.import_module(module_name)
    internal = USER_MODULES[module_name]
    public = defined_public_names(module_name)
    assert internal <= public, f"stale internal names in USER_MODULES: {internal - public}"
    missing = public - internal - set(stream_router.__all__)
    assert not missing, (
        f"{module_name} defines {sorted(missing)}: export them from stream_router/__init__.py "
        "(and __all__), or list them as internal in USER_MODULES"
    )
    for name in public - internal:
        assert getattr(stream_router, name) is getattr(module, name), name


def test_the_testing_module_exports_what_it_defines() -> None:
    defined = defined_public_names("stream_router.testing")
    assert set(srt.__all__) == defined | {"FakeReviewBackend"}


def test_every_exported_error_is_under_the_root() -> None:
    exported = [getattr(stream_router, name) for name in stream_router.__all__]
    errors = [obj for obj in exported if isinstance(obj, type) and issubclass(obj, Exception)]
    assert stream_router.StreamRouterError in errors
    assert all(issubclass(error, stream_router.StreamRouterError) for error in errors)


def test_version_is_the_distribution_version() -> None:
    assert stream_router.__version__ == version("stream-router")


@pytest.mark.parametrize("statement", ["import stream_router", "import stream_router.testing"])
def test_importing_the_public_api_is_light(statement: str) -> None:
    check = (
        f"import sys\n{statement}\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules or any("
        "n.startswith(m + '.') for n in sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, check=False, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", f"{statement} imports {done.stdout.strip()}"


def test_every_package_is_a_regular_package() -> None:
    root = Path(stream_router.__file__).parent
    folders = {path.parent for path in root.rglob("*.py")} | {root / "schemas"}
    without = sorted(str(f.relative_to(root)) for f in folders if not (f / "__init__.py").exists())
    assert not without, f"namespace packages left: {without}"


def test_the_example_plugin_passes_its_own_tests() -> None:
    # As its author runs them: pytest in the plugin's folder, the plugin and the router importable.
    path = os.pathsep.join([str(PLUGIN_DIR), str(REPO)])
    env = {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q"],
        capture_output=True,
        text=True,
        check=False,
        cwd=PLUGIN_DIR,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout, done.stdout


# check_policy against policies that each break one rule.


class LabelParams(PolicyParams):
    labels: list[str] = Field(default=["fraud"], description="Labels to review.")


class GoodPolicy(EventPolicy[LabelParams]):
    params_model = LabelParams
    summary = "review listed labels"

    def check(self, prediction: Prediction) -> Verdict:
        return Verdict(prediction.label in self.params.labels, f"label {prediction.label}")


class RaisingPolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        customer = prediction.event["customer"]["id"]  # KeyError, TypeError on odd events
        return Verdict(customer == "c-1", f"customer {customer}")


class FlippingPolicy(GoodPolicy):
    """Reviews everything on every other call: not deterministic."""

    calls = 0

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        self.calls += 1
        return [Verdict(self.calls % 2 == 0, "my turn") for _ in batch]


class BatchMeanPolicy(GoodPolicy):
    """Reviews what is below the batch's mean confidence: depends on the rest of the batch."""

    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        mean = sum(p.confidence for p in batch) / max(len(batch), 1)
        return [Verdict(p.confidence < mean, f"below mean {mean}") for p in batch]


class FirstOnlyPolicy(GoodPolicy):
    def evaluate(self, batch: Sequence[Prediction]) -> list[Verdict]:
        return [self.check(prediction) for prediction in batch[:1]]


class TuplePolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        return (prediction.label == "fraud", "fraud")  # type: ignore[return-value]


class EmptyReasonPolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        return Verdict(False, "")


class MutatingPolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        event = prediction.event
        if isinstance(event, dict):
            event.pop("customer", None)
        return Verdict(False, "looked")


class SleepingPolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        time.sleep(0.002)
        return Verdict(False, "took my time")


class UndescribedParams(PolicyParams):
    labels: list[str] = Field(default_factory=lambda: ["fraud"])


class UndescribedPolicy(GoodPolicy):
    params_model = UndescribedParams  # type: ignore[assignment]


class Loose(BaseModel):
    labels: list[str] = Field(default=["fraud"], description="Labels to review.")


class LooseParamsPolicy(GoodPolicy):
    params_model = Loose  # type: ignore[assignment]


class NoSummaryPolicy(GoodPolicy):
    summary = ""


class TwoLineSummaryPolicy(GoodPolicy):
    summary = "review listed labels\nand more"


BROKEN: list[tuple[type[Policy[Any]], str, str]] = [
    (
        RaisingPolicy,
        "never raises",
        r"raised KeyError: 'customer' on prediction 'event-0'",
    ),
    (FlippingPolicy, "same input, same verdicts", r"got Verdict\(review=(True|False)"),
    (BatchMeanPolicy, "batch-independent", r"alone, Verdict\(.*in a batch of \d+"),
    (FirstOnlyPolicy, "one verdict each", r"returned 1 verdicts \(list\) for \d+ predictions"),
    (TuplePolicy, "one verdict each", r"got \(False, 'fraud'\); a verdict is Verdict"),
    (EmptyReasonPolicy, "one verdict each", r"Verdict\(review=False, reason=''\)"),
    (MutatingPolicy, "leaves its input alone", r"evaluate changed prediction 'event-1'"),
    (SleepingPolicy, "fast", r"ms per prediction over \d+ predictions, above 1 ms"),
    (UndescribedPolicy, "documented", r"UndescribedParams\.labels has no description"),
    (LooseParamsPolicy, "documented", r"params_model is .*Loose.*not a PolicyParams subclass"),
    (NoSummaryPolicy, "documented", r"summary '' must be one non-empty line"),
    (TwoLineSummaryPolicy, "documented", r"must be one non-empty line"),
]


def test_a_policy_that_keeps_the_contract_passes() -> None:
    check_policy(GoodPolicy("good", LabelParams()), [make_prediction(label="fraud")])


@pytest.mark.parametrize(("cls", "rule", "detail"), BROKEN, ids=[c.__name__ for c, _, _ in BROKEN])
def test_a_broken_policy_fails_naming_the_rule(
    cls: type[Policy[Any]], rule: str, detail: str
) -> None:
    policy = cls("broken", LabelParams())
    with pytest.raises(AssertionError) as failure:
        check_policy(policy, max_s_per_event=0.001)
    message = str(failure.value)
    assert message.startswith(
        f"policy 'broken' ({cls.__qualname__}) breaks the policy contract, rule '{rule}': "
    ), message
    assert re.search(detail, message), message


class BoomPolicy(GoodPolicy):
    def check(self, prediction: Prediction) -> Verdict:
        if prediction.label == "boom":
            raise ValueError("boom")
        return super().check(prediction)


def test_the_predictions_passed_in_are_checked_too() -> None:
    policy = BoomPolicy("boom", LabelParams())
    check_policy(policy)
    with pytest.raises(
        AssertionError, match=r"rule 'never raises': evaluate raised ValueError: boom on prediction"
    ):
        check_policy(policy, [make_prediction(event_id="mine", label="boom")])


class TrackedPolicy(BoomPolicy):
    def __init__(self, name: str, params: LabelParams) -> None:
        super().__init__(name, params)
        self.log: list[str] = []

    def start(self) -> None:
        self.log.append("start")

    def close(self) -> None:
        self.log.append("close")

    def check(self, prediction: Prediction) -> Verdict:
        assert self.log == ["start"], "evaluated outside start() ... close()"
        return super().check(prediction)


def test_the_lifecycle_runs_as_in_ingest() -> None:
    policy = TrackedPolicy("tracked", LabelParams())
    check_policy(policy)
    assert policy.log == ["start", "close"]


def test_the_policy_is_closed_when_a_check_fails() -> None:
    policy = TrackedPolicy("tracked", LabelParams())
    with pytest.raises(AssertionError, match="rule 'never raises'"):
        check_policy(policy, [make_prediction(label="boom")])
    assert policy.log == ["start", "close"]
