"""``stream-router demo history``: envelopes written offline through the router's real parts."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream_router.demo.history import (
    HistoryGenerator,
    history_router,
    render,
    true_selective_error,
    write_history,
)
from stream_router.demo.settings import DemoSettings
from stream_router.errors import ConfigError
from stream_router.ingest.parser import EventParser
from stream_router.models import SourceRef
from stream_router.policies.routes import Routes
from stream_router.settings import IngestSettings, PoliciesSettings
from tests.envelope_schema import envelope_validator

ARN = "arn:aws:sagemaker:us-east-1:123456789012:flow-definition/"


def settings_with(router: dict[str, Any] | None = None, **reviewers: Any) -> DemoSettings:
    """The demo settings with ``reviewers`` set on every flow, and another router section."""
    data = DemoSettings().model_dump(mode="json")
    for flow in data["sandbox"]["flow_definitions"]:
        flow["reviewers"].update(reviewers)
    if router is not None:
        data["router"] = router
    return DemoSettings.model_validate(data)


def with_review(**review: Any) -> dict[str, Any]:
    """The demo's router sections with ``review`` settings changed."""
    router = DemoSettings().router
    return {**router, "review": {**router["review"], **review}}


def records(
    settings: DemoSettings | None = None, *, events: int, seed: int | None = None
) -> list[dict[str, Any]]:
    generator = HistoryGenerator(settings, events=events, seed=seed)
    return [orjson.loads(line) for line in generator.records()]


def test_every_event_gets_one_schema_valid_envelope(tmp_path: Path) -> None:
    settings = settings_with(abandon_rate=0.3)  # some reviews expire, some are escalated
    stats = write_history(tmp_path / "h.jsonl", events=1500, seed=3, settings=settings)
    lines = (tmp_path / "h.jsonl").read_bytes().splitlines()
    assert len(lines) == stats.records == stats.events == 1500
    found = [orjson.loads(line) for line in lines]
    validator = envelope_validator()
    for record in found:
        errors = sorted(validator.iter_errors(record), key=str)
        assert not errors, (record["event_id"], errors[0].message)
    ids = [record["event_id"] for record in found]
    assert len(set(ids)) == 1500
    assert ids[0] == "evt-3-0000000"
    assert ids[-1] == "evt-3-0001499"
    decisions = Counter(record["decision"] for record in found)
    assert decisions == {k: v for k, v in stats.decisions.items() if v}
    assert min(decisions["accepted"], decisions["reviewed"], decisions["unreviewed"]) > 0
    assert stats.bytes == (tmp_path / "h.jsonl").stat().st_size


def test_events_look_like_the_demos_and_sit_where_kafka_would_put_them() -> None:
    found = records(events=400)
    offsets: Counter[int] = Counter()
    for index, record in enumerate(found):
        event = record["event"]
        assert set(event) == {
            "event_id", "model", "model_version", "label", "confidence", "ground_truth",
            "timestamp",
        }  # fmt: skip
        assert event["timestamp"] == pytest.approx(1_767_225_600 + index / 10)
        assert record["prediction"]["label"] == event["label"]
        assert record["key"] == event["event_id"]
        source = record["source"]
        assert source["topic"] == "predictions"
        assert source["offset"] == offsets[source["partition"]]  # consecutive per partition
        offsets[source["partition"]] += 1
        assert source["timestamp_ms"] == round(event["timestamp"] * 1000)
    assert set(offsets) == {0, 1}  # the demo's two partitions, both used


def test_decisions_are_the_routes_decisions() -> None:
    settings = DemoSettings()
    config = history_router(settings)
    routes = Routes(PoliciesSettings.model_validate(config["policies"]))
    parser = EventParser(IngestSettings.model_validate(config["ingest"]).mapping)
    found = records(settings, events=3000)
    predictions = [
        parser.parse(
            orjson.dumps(record["event"]),
            SourceRef(
                record["source"]["topic"],
                record["source"]["partition"],
                record["source"]["offset"],
                record["key"].encode(),
                record["source"]["timestamp_ms"],
            ),
        )
        for record in found
    ]
    for record, decision in zip(found, routes.decide(predictions), strict=True):
        assert (record["decision"] != "accepted") == decision.review
        assert record["route"] == decision.route
        assert record["policy"] == decision.policy
        assert record["reason"] == decision.reason
        assert record["policy_version"] == "demo-1"
        assert decision.propensity is not None
        assert record["review_probability"] == decision.propensity.wire


def test_review_probability_is_the_audit_share_on_the_audit_route_and_one_elsewhere() -> None:
    found = records(events=4000)
    by_route: dict[str | None, set[tuple[float, tuple[tuple[str, float], ...]]]] = {}
    for record in found:
        probability = record["review_probability"]
        key = (probability["total"], tuple(sorted(probability["routes"].items())))
        by_route.setdefault(record["route"], set()).add(key)
    assert by_route["audit"] == {(0.02, (("audit", 0.02),))}
    assert by_route["experts"] == {(1.0, (("experts", 1.0),))}
    assert by_route["general"] == {(1.0, (("general", 1.0),))}
    # Accepted: unclaimed by the deterministic routes, so only the 2 % draw could have taken it.
    assert by_route[None] == {(0.02, (("audit", 0.02),))}
    audited = [r for r in found if r["route"] == "audit"]
    assert 40 <= len(audited) <= 110  # ~2 % of the ~3,800 the first routes leave
    assert all(r["review"]["review_flow"] == ARN + "demo-experts" for r in audited)


def test_perfect_reviewers_answer_the_ground_truth_and_correct_exactly_the_wrong() -> None:
    found = records(settings_with(error_rate=0.0, abandon_rate=0.0), events=3000)
    reviewed = [r for r in found if r["decision"] == "reviewed"]
    assert len(reviewed) > 100
    for record in reviewed:
        review, truth = record["review"], record["event"]["ground_truth"]
        assert review["label"] == truth
        assert all(answer["answer"] == truth for answer in review["answers"])
        assert review["corrected"] == (record["prediction"]["label"] != truth)
        assert review["agreement"] == 1.0
    assert any(r["review"]["corrected"] for r in reviewed)
    assert not any(r["decision"] == "unreviewed" for r in found)


def test_simulated_reviewers_err_as_configured() -> None:
    """demo-general: one worker wrong 5 % of the time; demo-experts: a panel of three, 2 % each,
    whose majority is almost never wrong. Wrong answers are another label than the truth."""
    stats_by_flow: dict[str, list[int]] = {}
    for record in records(settings_with(abandon_rate=0.0), events=20_000, seed=11):
        if record["decision"] != "reviewed":
            continue
        review, truth = record["review"], record["event"]["ground_truth"]
        flow = review["review_flow"].removeprefix(ARN)
        counts = stats_by_flow.setdefault(flow, [0, 0, 0, 0])
        counts[0] += len(review["answers"])
        counts[1] += sum(answer["answer"] != truth for answer in review["answers"])
        counts[2] += 1
        counts[3] += review["label"] != truth
        assert {answer["answer"] for answer in review["answers"]} <= {"cat", "dog", "bird", "other"}
        assert review["corrected"] == (review["label"] != record["prediction"]["label"])
    workers, wrong, reviews, wrong_reviews = stats_by_flow["demo-general"]
    assert workers == reviews > 300
    assert abs(wrong / workers - 0.05) < 4 * math.sqrt(0.05 * 0.95 / workers)
    workers, wrong, reviews, wrong_reviews = stats_by_flow["demo-experts"]
    assert workers == 3 * reviews
    assert abs(wrong / workers - 0.02) < 4 * math.sqrt(0.02 * 0.98 / workers)
    assert wrong_reviews / reviews < 0.005


def test_expired_reviews_escalate_then_end_unreviewed_expired() -> None:
    found = records(settings_with(abandon_rate=1.0), events=2000)
    reviews = [r for r in found if r["route"] is not None]
    assert reviews
    assert all(r["decision"] == "unreviewed" for r in reviews)
    for record in reviews:
        review = record["review"]
        assert review["failure_code"] == "Expired"
        assert review["status"] == "Failed"
        assert review["reason"].startswith("The human loop expired")
        escalated = record["route"] in ("general", "audit")  # review.escalation_flows
        assert review["loop_name"].endswith("-a2") == escalated
        assert review["review_flow"] == ARN + "demo-experts"
        assert record["timestamps"]["reviewed_s"] > record["timestamps"]["decided_s"]


def test_dead_lettered_reviews_have_no_line_and_are_counted(tmp_path: Path) -> None:
    settings = settings_with(with_review(on_failure="dead-letter"), abandon_rate=1.0)
    stats = write_history(tmp_path / "h.jsonl", events=1000, settings=settings)
    lines = (tmp_path / "h.jsonl").read_bytes().splitlines()
    assert stats.decisions["dead-lettered"] > 0
    assert stats.decisions["reviewed"] == stats.decisions["unreviewed"] == 0
    assert len(lines) == stats.records == 1000 - stats.decisions["dead-lettered"]
    assert stats.failure_codes == {"Expired": stats.decisions["dead-lettered"]}


def test_same_seed_same_bytes_and_another_seed_another_history(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_history(tmp_path / name, events=2500, seed=5)
    write_history(tmp_path / "c", events=2500, seed=6)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert (tmp_path / "a").read_bytes() != (tmp_path / "c").read_bytes()
    default = write_history(tmp_path / "d", events=10)  # seed None: history.seed
    assert default.seed == DemoSettings().history.seed == 7


def test_true_error_statistics_count_the_ground_truth(tmp_path: Path) -> None:
    path = tmp_path / "h.jsonl"
    stats = write_history(path, events=6000, seed=2)
    found = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    for label, errors in stats.labels.items():
        mine = [r for r in found if r["prediction"]["label"] == label]
        wrong = [r for r in mine if r["event"]["ground_truth"] != label]
        accepted = [r for r in mine if r["decision"] == "accepted"]
        accepted_wrong = [r for r in accepted if r["event"]["ground_truth"] != label]
        assert (errors.predictions, errors.wrong) == (len(mine), len(wrong))
        assert (errors.accepted, errors.accepted_wrong) == (len(accepted), len(accepted_wrong))
        assert errors.accepted_error == len(accepted_wrong) / len(accepted)
    routes = Counter((r["route"], r["decision"]) for r in found if r["route"] is not None)
    assert {(route, d): n for route, ds in stats.routes.items() for d, n in ds.items()} == routes
    audited = [
        r for r in found if r["decision"] == "reviewed" and r["review_probability"]["total"] < 1
    ]
    assert stats.audited == len(audited)
    assert stats.audited_corrected == sum(r["review"]["corrected"] for r in audited)
    reviewed = [r for r in found if r["decision"] == "reviewed"]
    assert stats.reviewed_right == sum(
        r["review"]["label"] == r["event"]["ground_truth"] for r in reviewed
    )
    above = true_selective_error(path, {"cat": 0.9, "bird": 0.0})
    cats = [r for r in found if r["prediction"]["label"] == "cat"]
    cats = [r for r in cats if r["prediction"]["confidence"] >= 0.9]
    assert above["cat"].predictions == len(cats)
    assert above["cat"].wrong == sum(r["event"]["ground_truth"] != "cat" for r in cats)
    assert (above["bird"].predictions, above["bird"].wrong) == (
        stats.labels["bird"].predictions,
        stats.labels["bird"].wrong,
    )
    assert set(above) == {"cat", "bird"}
    text = render(stats)
    assert "true error by predicted label" in text
    assert str(path) in text


def test_the_model_is_over_confident_with_unequal_errors() -> None:
    """The defaults: most predictions very sure, each label sure beyond its accuracy, and the
    labels far apart in how often they are wrong (bird the worst)."""
    model = DemoSettings().history
    shares: Counter[str] = Counter()
    right: Counter[str] = Counter()
    confidence: dict[str, float] = {}
    sure = 0
    found = records(events=20_000, seed=1)
    for record in found:
        label = record["prediction"]["label"]
        shares[label] += 1
        right[label] += record["event"]["ground_truth"] == label
        confidence[label] = confidence.get(label, 0.0) + record["prediction"]["confidence"]
        sure += record["prediction"]["confidence"] >= 0.9
    total = sum(m.share for m in model.labels.values())
    assert sure / len(found) > 0.75
    for label, settings in model.labels.items():
        n = shares[label]
        assert abs(n / len(found) - settings.share / total) < 0.02
        accuracy = right[label] / n
        assert abs(accuracy - settings.accuracy) < 4 * math.sqrt(0.25 / n)
        assert confidence[label] / n > accuracy  # over-confident
    accuracies = {label: right[label] / shares[label] for label in shares}
    assert min(accuracies, key=accuracies.__getitem__) == "bird"
    assert max(accuracies.values()) - accuracies["bird"] > 0.05


def test_settings_it_cannot_run_are_refused_naming_the_setting() -> None:
    unknown = with_review(escalation_flows={"general": "nope"})
    with pytest.raises(ConfigError, match=r"review\.escalation_flows\.general is 'nope'"):
        HistoryGenerator(settings_with(unknown), events=1)
    misspelt = with_review(escalation_flows={"genral": "demo-experts"})
    with pytest.raises(ConfigError, match=r"escalation_flows\.genral: no route is named"):
        HistoryGenerator(settings_with(misspelt), events=1)
    with pytest.raises(ConfigError, match="A2I reviewers only"):
        HistoryGenerator(settings_with(with_review(backend="label-studio")), events=1)
    router = DemoSettings().router
    bad = {**router, "policies": {**router["policies"], "version": "no spaces allowed"}}
    with pytest.raises(ConfigError, match=r"policies\.version"):
        HistoryGenerator(settings_with(bad), events=1)
    with pytest.raises(ValueError, match="events"):
        HistoryGenerator(events=-1)
