"""The demo models: a tiny-budget build is servable and deterministic; the evaluation metrics are right.

The build here trains for two steps (seconds), so its models are untrained: these tests check
shapes, serving, the pipeline wiring and the metrics, not accuracy. A full build's accuracy is
checked by the last test when one is present (``EDGEAIGC_DEMO_MODELS`` or ./demo-models).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeaigc.inference.demo_models import evaluate as ev
from edgeaigc.inference.demo_models.data import (
    CLASSIFIER_NAME,
    DETECTOR_NAMES,
    VEHICLE_TYPES,
    DetectorSample,
    held_out_scene,
    scene_seed,
)
from edgeaigc.inference.pipeline.backend import LocalRunner, RemoteRunner
from edgeaigc.inference.pipeline.config import PipelineConfig, load_pipeline_config
from edgeaigc.inference.pipeline.scenes import SceneConfig, SceneGenerator
from edgeaigc.inference.pipeline.traffic import TrafficPipeline
from tests.component.conftest import RunningServer, running_server

torch = pytest.importorskip("torch", reason="building the demo models needs torch (pip install 'edgeaigc[train]')")
onnx = pytest.importorskip("onnx", reason="building the demo models needs onnx (pip install 'edgeaigc[train]')")

from edgeaigc.inference.demo_models import build  # noqa: E402  (needs torch)
from edgeaigc.inference.demo_models.detector import assign_targets  # noqa: E402

TINY = [
    "--detector-steps",
    "2",
    "--classifier-steps",
    "2",
    "--classifier-frames",
    "4",
    "--eval-frames",
    "3",
    "--validation-frames",
    "2",
    "--count-frames",
    "6",
    "--threads",
    "1",
    "--minutes",
    "2",
    "--no-progress",
]
ALL_MODELS = (*DETECTOR_NAMES.values(), CLASSIFIER_NAME)


def run_build(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    build.add_arguments(parser)
    return build.run(parser.parse_args(list(argv)))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-models") / "repo"
    assert run_build("--output", str(root), "--seed", "3", *TINY) == 0
    return root


@pytest.fixture(scope="module")
def server(built: Path) -> Iterator[RunningServer]:
    with running_server(built, max_request_bytes=4 << 20) as running:
        yield running


def local_config(root: Path, daypart: str, **detector_changes: object) -> PipelineConfig:
    """The pipeline configuration the build wrote, with the models as .onnx paths (in-process)."""
    config = load_pipeline_config(root / f"pipeline-{daypart}.yaml")
    assert config.classifier is not None
    return dataclasses.replace(
        config,
        detector=dataclasses.replace(
            config.detector, model=str(root / config.detector.model / "model.onnx"), **detector_changes
        ),
        classifier=dataclasses.replace(config.classifier, model=str(root / config.classifier.model / "model.onnx")),
    )


def generated_frame(night: bool = False) -> np.ndarray:
    frame, truths = SceneGenerator(SceneConfig(frames=20, seed=99, night=night)).render(10)
    assert len(truths) >= 3
    return frame


# -- the build ----------------------------------------------------------------------------------


def test_tiny_build_writes_a_model_repository_with_checksums_and_a_report(built: Path) -> None:
    for name in ALL_MODELS:
        model = built / name / "model.onnx"
        settings = yaml.safe_load((built / name / "config.yaml").read_text())
        assert settings["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
        assert model.stat().st_size < 1 << 20  # tiny models: under 1 MiB each
        metadata = {p.key: p.value for p in onnx.load(str(model)).metadata_props}
        described = json.loads(metadata[build.METADATA_KEY])
        assert described["seed"] == 3 and described["steps"] == 2
    report = json.loads((built / "report.json").read_text())
    assert set(report["models"]) == set(ALL_MODELS)
    assert report["deterministic"] is True
    held = report["held_out"]
    assert set(held["detector"]) == set(DETECTOR_NAMES.values())
    for figures in held["detector"].values():
        assert figures["frames"] == 3 and 0 <= figures["precision"] <= 1 and 0 <= figures["recall"] <= 1
    assert (
        held["classifier"]["all"]["crops"] == held["classifier"]["day"]["crops"] + held["classifier"]["night"]["crops"]
    )
    for daypart in ("day", "night"):
        counts = held["counts"][daypart]
        assert counts["clip"]["frames"] == 6
        # The ideal detector sees the same truth the pipeline is compared with.
        assert counts["ideal_detector"]["truth_total"] == counts["pipeline"]["truth_total"]
        config = load_pipeline_config(built / f"pipeline-{daypart}.yaml")
        assert config.detector.model == DETECTOR_NAMES[daypart]
        assert config.classifier is not None and config.classifier.model == CLASSIFIER_NAME
        assert dict(config.detector.classes) == dict(enumerate(VEHICLE_TYPES))


def test_same_seed_same_models(built: Path, tmp_path: Path) -> None:
    """Deterministic given the seed (same machine, torch version and thread count): identical ONNX bytes."""
    assert run_build("--output", str(tmp_path), "--seed", "3", *TINY) == 0
    for name in ALL_MODELS:
        assert (tmp_path / name / "model.onnx").read_bytes() == (built / name / "model.onnx").read_bytes(), name


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--detector-steps", "0"], "--detector-steps must be at least 1"),
        (["--seed", "-1"], "--seed must be >= 0"),
        (["--minutes", "0"], "--minutes must be positive"),
    ],
)
def test_bad_usage_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    assert run_build("--output", str(tmp_path / "out"), *argv) == 2
    assert message in capsys.readouterr().err
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert run_build("--output", str(a_file)) == 2


# -- serving and the pipeline --------------------------------------------------------------------


def test_the_server_loads_the_built_models_and_answers_with_the_right_shapes(
    built: Path, server: RunningServer
) -> None:
    index = {entry["name"]: entry["state"] for entry in server.client.post("/v2/repository/index").json()}
    assert index == dict.fromkeys(ALL_MODELS, "READY")
    for name in DETECTOR_NAMES.values():
        metadata = server.client.get(f"/v2/models/{name}").json()
        assert metadata["inputs"] == [{"name": "images", "datatype": "FP32", "shape": [-1, 3, 192, 320]}]
        images = np.random.default_rng(0).uniform(0, 1, size=(1, 3, 192, 320)).astype(np.float32)
        output = RemoteRunner(server.url, name).run({"images": images})["output"]
        assert output.shape == (1, 24 * 40, 5 + len(VEHICLE_TYPES))
        np.testing.assert_allclose(
            output, LocalRunner(built / name / "model.onnx").run({"images": images})["output"], rtol=1e-5, atol=1e-4
        )
        assert ((output[..., 4:] >= 0) & (output[..., 4:] <= 1)).all()
        np.testing.assert_allclose(output[0, :, 5:].sum(axis=1), 1.0, atol=1e-5)  # class probabilities
        assert (output[0, :, 2:4] > 0).all()  # widths and heights
    crops = np.random.default_rng(1).uniform(0, 1, size=(3, 3, 32, 64)).astype(np.float32)
    classifier = RemoteRunner(server.url, CLASSIFIER_NAME)
    assert classifier.run({"input": crops})["logits"].shape == (3, len(VEHICLE_TYPES))
    assert classifier.run({"input": crops[:1]})["logits"].shape == (1, len(VEHICLE_TYPES))  # dynamic batch


def test_the_pipeline_runs_end_to_end_with_the_built_detector(built: Path, server: RunningServer) -> None:
    """On a generated frame, in-process and against the server: same detections, types and flow figures.

    The tiny build's detector is untrained, so its threshold is dropped to 0 to have boxes to classify.
    """
    frame = generated_frame(night=True)
    local = TrafficPipeline.local(local_config(built, "night", score_threshold=0.0), camera="cam-demo")
    result = local.process(frame)
    assert 0 < len(result.detections) <= 100
    assert result.classifications is not None and len(result.classifications) == len(result.detections)
    assert {c.label for c in result.classifications} <= set(VEHICLE_TYPES)
    for detection in result.detections:
        x1, y1, x2, y2 = detection.box
        assert 0 <= x1 < x2 <= frame.shape[1] and 0 <= y1 < y2 <= frame.shape[0]
    document = json.loads(json.dumps(result.to_dict()))
    assert set(document["timings_ms"]) == {"decode", "detect", "classify", "flow"}

    served = load_pipeline_config(built / "pipeline-night.yaml")
    served = dataclasses.replace(served, detector=dataclasses.replace(served.detector, score_threshold=0.0))
    remote = TrafficPipeline.remote(served, server.url, camera="cam-demo").process(frame)
    np.testing.assert_allclose(
        np.array([d.box for d in remote.detections]), np.array([d.box for d in result.detections]), atol=1e-3
    )
    assert [d.vehicle_type for d in remote.detections] == [d.vehicle_type for d in result.detections]


# -- metrics and targets (hand-made cases) -------------------------------------------------------


def test_matching_precision_recall_and_ap_on_a_hand_made_frame() -> None:
    truth_boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [50, 0, 54, 10]], dtype=float)
    truth_ignored = np.array([False, False, True])  # the last one: a sliver at the edge of the frame
    truth_classes = np.array([0, 2, 1])
    boxes = np.array(
        [
            [0, 0, 10, 10],  # on A: true positive
            [1, 0, 11, 10],  # on A again (IoU 0.82): a duplicate, false positive
            [20, 0, 30, 10],  # on B: true positive
            [50, 0, 55, 10],  # on the ignored sliver: neither
            [100, 100, 110, 110],  # on nothing: false positive
        ],
        dtype=float,
    )
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    classes = np.array([0, 0, 1, 3, 0])
    match = ev.match_detections(boxes, scores, truth_boxes, truth_ignored)
    assert match.true_positive.tolist() == [True, False, True, False, False]
    assert match.ignored.tolist() == [False, False, False, True, False]
    assert match.matched_truth.tolist() == [0, -1, 1, -1, -1]
    assert match.truths == 2
    tally = ev.DetectionTally()
    tally.add(match, scores, classes, truth_classes)
    assert tally.at(0.0) == {"precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "tp": 2, "fp": 2, "fn": 0}
    assert tally.at(0.65) == {"precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "tp": 2, "fp": 1, "fn": 0}
    assert tally.at(0.75)["precision"] == 0.5 and tally.at(0.75)["recall"] == 0.5
    assert tally.at(0.95) == {"precision": 1.0, "recall": 0.0, "f1": 0.0, "tp": 0, "fp": 0, "fn": 2}
    # PR points (0.5, 1), (0.5, 0.5), (1, 2/3), (1, 0.5): interpolated AP = 0.5 * 1 + 0.5 * 2/3.
    assert tally.average_precision() == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert tally.type_accuracy(0.0) == 0.5  # A called class 0 (right), B called 1 (it is 2)
    assert ev.choose_threshold(tally, (0.3, 0.65, 0.75)) == 0.65
    # Greedy by score, not by order: the better-scoring duplicate takes A.
    swapped = ev.match_detections(boxes[[1, 0]], np.array([0.9, 0.8]), truth_boxes[:1], truth_ignored[:1])
    assert swapped.true_positive.tolist() == [True, False]


def test_classification_report_and_count_error_on_hand_made_cases() -> None:
    report = ev.classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ("a", "b", "c"))
    assert report["crops"] == 5 and report["accuracy"] == pytest.approx(0.6)
    assert report["per_class"]["a"] == {"support": 2, "accuracy": 0.5, "precision": 0.5}
    assert report["per_class"]["b"] == {"support": 2, "accuracy": 1.0, "precision": pytest.approx(2 / 3)}
    assert report["per_class"]["c"] == {"support": 1, "accuracy": 0.0, "precision": None}
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    error = ev.count_error({"car": 9, "van": 3}, {"car": 10, "van": 2, "bus": 1})
    assert (error["truth_total"], error["counted_total"], error["abs_error"]) == (13, 12, 1)
    assert error["relative_error"] == pytest.approx(1 / 13)
    assert error["type_abs_error_sum"] == 3 and error["type_error"] == pytest.approx(3 / 13)
    assert error["per_type"]["bus"] == {"truth": 1, "counted": 0}


def test_targets_go_to_the_centre_cell_and_neighbours_inside_the_box() -> None:
    sample = DetectorSample(
        canvas=np.zeros((192, 320, 3), np.uint8),
        boxes=np.array([[100, 50, 120, 56], [0, 100, 3, 110]], dtype=np.float32),
        classes=np.array([1, 0]),
        ignore=np.array([False, True]),
    )
    targets = assign_targets(sample, (24, 40))
    # Centre (110, 53): cell (row 6, col 13); col 14's centre x = 116 lies inside, col 12's (100) does not.
    assert targets.positive_cells.tolist() == [6 * 40 + 13, 6 * 40 + 14]
    assert targets.classes.tolist() == [1, 1]
    assert targets.objectness.sum() == 2
    assert targets.weight[13 * 40 + 0] == 0  # the ignored sliver's cell takes no objectness loss
    assert targets.weight.sum() == 24 * 40 - 1


def test_training_and_held_out_scenes_never_share_a_seed() -> None:
    training = {scene_seed(s, i, held_out=False) for s in range(3) for i in range(0, 1_000_003, 9973)}
    held_out = {scene_seed(s, i, held_out=True) for s in range(3) for i in range(0, 1_000_003, 9973)}
    assert not training & held_out
    assert held_out_scene(0, 0, False, 10).seed % 2 == 1
    assert scene_seed(1, 0, held_out=False) != scene_seed(0, 0, held_out=False)


# -- a full build, when there is one -------------------------------------------------------------

FULL_BUILD = Path(os.environ.get("EDGEAIGC_DEMO_MODELS", Path(__file__).resolve().parents[2] / "demo-models"))


@pytest.mark.skipif(
    not (FULL_BUILD / "report.json").is_file(),
    reason=f"no full build at {FULL_BUILD} (run `edgeaigc build-demo-models`, or set EDGEAIGC_DEMO_MODELS)",
)
def test_a_full_build_finds_classifies_and_counts_held_out_vehicles() -> None:
    """A quick re-check of a full build on fresh held-out data (other scenes than its report used)."""
    report = json.loads((FULL_BUILD / "report.json").read_text())
    seed = int(report["seed"]) + 1  # held-out scenes of another seed: never trained on either
    frames = {d: list(ev.held_out_frames(seed, d == "night", 20)) for d in DETECTOR_NAMES}
    for daypart, name in DETECTOR_NAMES.items():
        threshold = float(report["models"][name]["score_threshold"])
        figures = ev.evaluate_detector(FULL_BUILD / name / "model.onnx", frames[daypart], threshold)
        assert figures["precision"] >= 0.9 and figures["recall"] >= 0.85, (name, figures)
    classifier = ev.evaluate_classifier(FULL_BUILD / CLASSIFIER_NAME / "model.onnx", frames)
    assert classifier["fully_visible"]["accuracy"] >= 0.9, classifier["fully_visible"]
    counts = ev.evaluate_counts(
        FULL_BUILD / DETECTOR_NAMES["day"] / "model.onnx",
        FULL_BUILD / CLASSIFIER_NAME / "model.onnx",
        seed,
        False,
        100,
        float(report["models"][DETECTOR_NAMES["day"]]["score_threshold"]),
    )
    assert counts["pipeline"]["truth_total"] >= 15
    assert counts["pipeline"]["relative_error"] <= 0.15, counts["pipeline"]
