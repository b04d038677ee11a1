"""``stream-router policies backtest`` end to end on a history the project makes.

The history is written offline by ``stream-router demo history`` (the router's own routes,
envelopes and simulated reviewers over a synthetic, miscalibrated model whose truth is known).
The statistics themselves are proven in ``tests/unit/thresholds`` by simulation; here: the
command reads the history as the router writes it, its outputs hold what they promise (schema,
CSV, plot, a snippet ``config check`` accepts), the history is read defensively, and on this
seeded history the certified thresholds keep the true error under the target.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from stream_router.backtest.history import History
from stream_router.cli import main
from stream_router.demo.history import true_selective_error, write_history
from stream_router.policies.routes import Routes
from stream_router.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "stream_router" / "schemas" / "backtest-report-v1.schema.json"


@pytest.fixture(scope="module")
def history_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "history.jsonl"
    write_history(path, events=120_000, seed=3)
    return path


@pytest.fixture(scope="module")
def outputs(history_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("outputs")
    paths = {name: out / name for name in ("report.json", "grid.csv", "plot.png", "snippet.yaml")}
    code = main(
        [
            "policies", "backtest", "--input", str(history_file),
            "--review-cost", "0.08", "--error-cost", "2",
            "--report", str(paths["report.json"]), "--csv", str(paths["grid.csv"]),
            "--plot", str(paths["plot.png"]), "--snippet", str(paths["snippet.yaml"]),
        ]
    )  # fmt: skip
    assert code == 0
    return paths


def _report(outputs: dict[str, Path]) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(outputs["report.json"].read_text())
    return data


def test_report_follows_its_schema_and_counts_the_history(outputs: dict[str, Path]) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    report = _report(outputs)
    jsonschema.Draft202012Validator(schema).validate(report)
    assert report["history"]["events"] == 120_000
    assert report["history"]["audit_rate"] == pytest.approx(0.02)
    assert [label["label"] for label in report["labels"]] == ["bird", "cat", "dog", "other"]


def test_certified_thresholds_keep_the_true_error_under_the_target(
    outputs: dict[str, Path], history_file: Path
) -> None:
    report = _report(outputs)
    certified = {
        entry["label"]: entry["threshold"] for entry in report["labels"] if entry["certified"]
    }
    assert certified, "the demo's model has labels the audit can certify"
    truth = true_selective_error(history_file, certified)
    for label, errors in truth.items():
        assert errors.wrong / errors.predictions <= report["target_error"], label
    for label in report["labels"]:
        if not label["certified"]:
            assert label["threshold"] is None
            assert label["auto_accept_rate"] == 0.0
            assert label["labels_needed"] is not None


def test_bird_is_refused_because_it_is_wrong_too_often(outputs: dict[str, Path]) -> None:
    [bird] = [entry for entry in _report(outputs)["labels"] if entry["label"] == "bird"]
    assert not bird["certified"]
    assert bird["error_estimate"] > 0.05  # the model is wrong on ~14 % of confident birds


def test_csv_has_one_row_per_label_and_threshold(outputs: dict[str, Path]) -> None:
    with outputs["grid.csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    report = _report(outputs)
    for label in report["labels"]:
        mine = [r for r in rows if r["label"] == label["label"]]
        assert 100 <= len(mine) <= 200
        recommended = [r for r in mine if r["recommended"] == "True"]
        if label["certified"]:
            assert [float(r["threshold"]) for r in recommended] == [label["threshold"]]
        else:
            assert recommended == []


def test_plot_is_a_png(outputs: dict[str, Path]) -> None:
    assert outputs["plot.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_snippet_is_a_configuration_the_router_accepts(outputs: dict[str, Path]) -> None:
    settings = load_settings(outputs["snippet.yaml"])
    Routes(settings.policies)
    routes = yaml.safe_load(outputs["snippet.yaml"].read_text())["policies"]["routes"]
    per_label = routes[0]["policy"]["per_label"]
    certified = {
        entry["label"]: entry["threshold"]
        for entry in _report(outputs)["labels"]
        if entry["certified"]
    }
    assert {k: v["below"] for k, v in per_label.items()} == certified
    assert routes[1]["policy"] == {"type": "sample", "percent": 2.0}  # the audit is kept


def _envelope(**changes: Any) -> bytes:
    record: dict[str, Any] = {
        "schema_version": 1,
        "event_id": "e1",
        "prediction": {"label": "cat", "confidence": 0.9},
        "decision": "accepted",
        "route": None,
        "review": None,
        "review_probability": {"total": 0.02, "routes": {"audit": 0.02}},
        "timestamps": {"decided_s": 1.0},
    }
    record.update(changes)
    return orjson.dumps(record)


def test_history_reads_defensively() -> None:
    history = History()
    lines = [
        b"not json",
        b"[1, 2]",
        _envelope(schema_version=2),
        _envelope(prediction={"label": "cat", "confidence": 87}),
        _envelope(decision="maybe"),
        _envelope(review_probability={"total": 2, "routes": {}}),
        _envelope(decision="reviewed", review={"label": "dog"}),  # no corrected/agreement
        _envelope(),
        _envelope(),  # a copy of the same event
        _envelope(event_id="e2", review_probability=None),  # revision 1.0
        _envelope(
            event_id="e3",
            decision="reviewed",
            route="audit",
            review={"label": "dog", "corrected": True, "agreement": 1.0},
        ),
    ]
    for line in lines:
        history.add(line)
    assert len(history) == 3
    assert history.duplicates == 1
    assert sum(history.skipped.values()) == 7
    assert history.without_probability == 1
    assert list(history.propensity) == [0.02, 0.0, 0.02]  # accepted 1.0 record: never reviewable
    assert list(history.wrong) == [0, 0, 1]


def test_a_candidate_configuration_is_replayed_over_the_history(
    history_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate.yaml"
    candidate.write_text(
        yaml.safe_dump(
            {
                "policies": {
                    "routes": [
                        {
                            "name": "low",
                            "review_flow": "fd",
                            "policy": {"type": "confidence", "below": 0.9},
                        }
                    ]
                },
                "review": {"budgets": {"low": {"per_day": 10}}},
            }
        )
    )
    assert (
        main(["policies", "backtest", "--input", str(history_file), "--config", str(candidate)])
        == 0
    )
    out = capsys.readouterr().out
    assert "the candidate configuration over this history" in out
    replayed = [
        line
        for line in out.splitlines()
        if line.strip().startswith("low ") and "(all labels)" in line
    ]
    with history_file.open("rb") as lines:
        confident = sum(1 for line in lines if orjson.loads(line)["prediction"]["confidence"] < 0.9)
    assert replayed
    assert int(replayed[0].split()[3]) == confident
    assert "route low:" in out
    assert "OVER BUDGET" in out


def test_no_history_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies", "backtest"]) == 2
    assert "--input FILE or --topic TOPIC" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["policies", "backtest", "--input", str(empty)]) == 1


def test_from_a_time_keeps_a_file_to_what_was_decided_since(tmp_path: Path) -> None:
    history = tmp_path / "history.jsonl"
    history.write_bytes(
        b"\n".join(
            _envelope(event_id=f"e{i}", timestamps={"decided_s": 1_700_000_000.0 + i * 3600})
            for i in range(10)
        )
    )
    report = tmp_path / "report.json"
    since = "2023-11-14T23:13:20+00:00"  # 1_700_003_600: the second record on
    assert main(["policies", "backtest", "--input", str(history), "--from", since,
                 "--report", str(report)]) == 0  # fmt: skip
    assert json.loads(report.read_text())["history"]["events"] == 9
    assert main(["policies", "backtest", "--input", str(history), "--from", "5"]) == 2
