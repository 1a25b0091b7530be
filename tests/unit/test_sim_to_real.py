"""The sim-to-real comparison: the system model's prediction for what the real system ran."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from edgeaigc.cluster import real_demo
from edgeaigc.cluster.real_demo import DemoCamera, DemoModel, fleet_documents
from edgeaigc.cluster.sim_to_real import Sample, compare, format_table, plot, predict

WORK_MS = {"det": 40.0, "cls": 2.0}


@pytest.fixture
def documents(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    files = {}
    for name, size in (("det", 3000), ("cls", 500)):
        files[name] = tmp_path / f"{name}.onnx"
        files[name].write_bytes(b"\0" * size * 1024)
    models = [DemoModel("det", "detection", files["det"]), DemoModel("cls", "classification", files["cls"])]
    cameras = [DemoCamera("camera-0", "test", ())]
    urls = {f"{m.name}.onnx": f"http://x/{m.name}" for m in models}
    # input_kilobytes reads ONNX files: these are not, so the fleet gets its inputs directly
    monkeypatch.setattr(real_demo, "input_kilobytes", lambda _: 100.0)
    return fleet_documents(models, cameras, urls, WORK_MS, 1.0, 10)


def test_a_sparse_hit_runs_at_full_core_speed_within_its_quota_and_a_miss_likewise(documents: list[dict]) -> None:
    # One request per 10 s: the replica's CFS quota is unused when it comes. At 400m the period's quota (40 ms)
    # holds the 40 ms of work: the core's full speed, not work / CPU (100 ms) as a slower core would say.
    sample = Sample(0.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, 0.1)}, "cls": {"cloud": (1.0, 0.01)}})
    predicted = predict(documents, sample)
    assert predicted[("det", "edge")] == pytest.approx(0.040, rel=0.03)
    # a miss: the work at the cloud replica's full core (its 500m quota holds 2 ms), the bed's 1 ms RTT, the
    # input and output over the bridge (10 Gbit/s)
    cloud = 0.002 + 0.001 + 100 * 8 / 1000 / 10000.0 + 2.0 * 8 / 1000 / 10000.0
    assert predicted[("cls", "cloud")] == pytest.approx(cloud, rel=0.05)


def test_a_hit_needing_more_than_a_periods_quota_is_rounded_up_to_the_next_period(documents: list[dict]) -> None:
    # 40 ms of work at 200m: 20 ms in the period it arrives in, the rest in the next; on average over the
    # phase it arrives at, about 90 ms: between its work (40) and work / CPU (200).
    sample = Sample(0.0, 10.0, ["det"], {"det": 200}, {"det": {"edge": (1.0, 0.1)}})
    assert predict(documents, sample)[("det", "edge")] == pytest.approx(0.09, abs=0.005)


def test_a_camera_over_its_uplink_share_waits_at_the_gateway_wherever_it_is_served(documents: list[dict]) -> None:
    from edgeaigc.cluster.sim_to_real import Bed

    # camera-0 sends det's 100 KB a second; the plan gave it 1 % of a 5 MB/s uplink beside a busy camera-1:
    # 50 KB/s, half of what it sends. The gateway paces it up to 1 s, then refuses (429) and it comes back:
    # its requests wait about 1 s before any replica sees them.
    served = {"det": {"cloud": (30.0, 1.0)}}
    paced = Sample(
        0.0, 30.0, [], {}, served, {"camera-0": 0.01, "camera-1": 0.99}, 5e6, {"camera-0": 1.5e6, "camera-1": 1e6}
    )
    bed = Bed({"camera-0": ["det"]})
    unpaced = predict(documents, paced)[("det", "cloud")]  # a run from before the uplink was sampled: no wait
    assert predict(documents, paced, bed)[("det", "cloud")] - unpaced > 0.8
    # the same camera with half the uplink: under its rate, the bucket's burst takes each frame at once
    roomy = dataclasses.replace(paced, bandwidth_share={"camera-0": 0.5, "camera-1": 0.5})
    assert predict(documents, roomy, bed)[("det", "cloud")] == pytest.approx(unpaced)


def test_points_are_request_weighted_per_model_place_and_limit(documents: list[dict], tmp_path: Path) -> None:
    samples = [
        Sample(0.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (3.0, 0.12)}}),
        Sample(10.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, 0.08)}}),
        Sample(20.0, 10.0, ["det"], {"det": 800}, {"det": {"edge": (2.0, 0.06)}}),
        Sample(30.0, 10.0, [], {}, {"det": {"cloud": (2.0, 0.09)}}),
    ]
    points = {(p.model, p.served_by, p.cpu_millicores): p for p in compare(documents, samples)}
    assert set(points) == {("det", "edge", 400), ("det", "edge", 800), ("det", "cloud", None)}
    at_400 = points[("det", "edge", 400)]
    assert at_400.requests == 4.0 and at_400.observed_ms == pytest.approx((3 * 120 + 80) / 4, abs=0.1)
    assert at_400.error == pytest.approx((at_400.predicted_ms - at_400.observed_ms) / at_400.observed_ms)
    assert "det" in format_table(list(points.values()))
    plot(list(points.values()), tmp_path / "s2r.png", "test")
    assert (tmp_path / "s2r.png").stat().st_size > 0


def test_the_request_overhead_is_added_to_hits_and_misses(documents: list[dict]) -> None:
    sample = Sample(0.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, 0.1)}, "cls": {"cloud": (1.0, 0.01)}})
    before = predict(documents, sample)
    for document in documents:
        if document["kind"] == "PlacementPolicy":
            document["spec"]["requestOverheadMs"] = 15.0
    after = predict(documents, sample)
    for key in (("det", "edge"), ("cls", "cloud")):
        assert after[key] - before[key] == pytest.approx(0.015)


def test_the_overhead_fitted_on_one_phase_is_the_weighted_median_residual(documents: list[dict]) -> None:
    from edgeaigc.cluster.sim_to_real import fit_overhead_ms, report, with_overhead

    bare = with_overhead(documents, 0.0)
    sample = Sample(0.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, 0.1)}})
    exact = predict(bare, sample)[("det", "edge")]
    # observed = prediction + 12 ms on most requests, + 40 ms on a few: the median says 12 ms
    samples = [
        Sample(0.0, 90.0, ["det"], {"det": 400}, {"det": {"edge": (9.0, exact + 0.012)}}),  # the same rate
        Sample(10.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, exact + 0.040)}}),
    ]
    assert fit_overhead_ms(documents, samples) == pytest.approx(12.0, abs=0.2)
    result = report(documents, {"first": samples, "second": samples})
    assert result.fitted_overhead_ms == pytest.approx(12.0, abs=0.2)
    (point,) = result.calibrated
    assert point.predicted_ms == pytest.approx(
        1000 * exact + 12.0, abs=0.3
    )  # the second phase, with the first's overhead


def test_the_work_is_measured_on_the_frames_the_camera_sends(tmp_path: Path) -> None:
    # the demo's generated scene through the default pipeline's detector input: real pixels, letterboxed
    camera = DemoCamera("camera-1", "generated scene, seed 1", ("--generated", "--seed", "1"), ("det",))
    tensors = real_demo.camera_tensors(DemoModel("det", "detection", tmp_path / "det.onnx"), camera, frames=3)
    assert len(tensors) == 3
    assert all(t.shape == (1, 3, 416, 416) and t.dtype == "float32" for t in tensors)
    assert all(float(t.std()) > 1.0 for t in tensors)  # a road scene, not a constant


def test_the_gateway_paces_by_the_routing_table_it_holds_not_the_one_the_operator_just_wrote(
    documents: list[dict],
) -> None:
    from edgeaigc.cluster.sim_to_real import Bed, routing_tables

    # generation 9 gave camera-0 1 % of the uplink; generation 10 gives it half; the gateway, reading the table
    # from a ConfigMap volume, still held 9 over the interval: its requests wait for the 1 %.
    stingy = Sample(0.0, 30.0, [], {}, {}, {"camera-0": 0.01, "camera-1": 0.99}, 5e6, {}, {}, (9, 9))
    served = {"det": {"cloud": (30.0, 1.0)}}
    sent = {"camera-0": 1.5e6, "camera-1": 1e6}
    late = Sample(30.0, 30.0, [], {}, served, {"camera-0": 0.5, "camera-1": 0.5}, 5e6, sent, {}, (10, 9))
    tables = routing_tables({"first": [stingy], "second": [late]})
    assert tables == {9: (stingy.bandwidth_share, 5e6), 10: (late.bandwidth_share, 5e6)}
    held = Bed({"camera-0": ["det"]}, routing_tables=tables)
    planned = Bed({"camera-0": ["det"]})
    assert predict(documents, late, held)[("det", "cloud")] - predict(documents, late, planned)[("det", "cloud")] > 0.8


def test_a_camera_that_starts_late_in_an_interval_carries_its_backlog_into_the_next(documents: list[dict]) -> None:
    from edgeaigc.cluster.sim_to_real import Bed, _predictions

    # camera-0 starts 4 s before the end of the first interval at 90 % of what it sends (90 KB/s for 100 KB a
    # second): each frame waits 0.1 s more than the last. Its 4 frames of the first interval are its last 4,
    # so the second interval starts 0.4 s behind, not with a bucket refilled over 26 silent seconds.
    shares = {"camera-0": 0.018, "camera-1": 0.982}
    first = Sample(
        0.0, 30.0, [], {}, {"det": {"cloud": (4.0, 0.5)}}, shares, 5e6, {"camera-0": 4 * 102400.0, "camera-1": 1e6}
    )
    second = Sample(
        30.0, 10.0, [], {}, {"det": {"cloud": (10.0, 0.9)}}, shares, 5e6, {"camera-0": 10 * 102400.0, "camera-1": 1e6}
    )
    bed = Bed({"camera-0": ["det"]})
    _, carried = _predictions(documents, [first, second], bed)
    silent = dataclasses.replace(first, camera_bytes={"camera-1": 1e6})
    _, fresh = _predictions(documents, [silent, second], bed)
    assert carried[("det", "cloud")] - fresh[("det", "cloud")] > 0.2


def _cumulative(counts_by_bound: dict[float, float]) -> list[float]:
    """Cumulative counts at the request-duration buckets from counts per bucket (by upper bound)."""
    from edgeaigc.cluster.sim_to_real import BOUNDS

    running, cumulative = 0.0, []
    for bound in BOUNDS:
        running += counts_by_bound.get(bound, 0.0)
        cumulative.append(running)
    return cumulative


def _sampled(cached: list[str]) -> Sample:
    from edgeaigc.cluster.replica_metrics import ReplicaInterval

    # det at the edge (400m): 10 requests, 60 ms at the gateway, 50 ms at the replica (8 up to 50 ms, 2 up to
    # 100 ms), 0.5 CPU seconds; cls at the cloud: 5 requests
    replicas = {
        "det": {"edge": ReplicaInterval(10, 0.5, _cumulative({0.05: 8, 0.1: 2}), cpu_seconds=0.5)},
        "cls": {"cloud": ReplicaInterval(5, 0.02, _cumulative({0.005: 5}), cpu_seconds=0.015)},
    }
    served = {"det": {"edge": (10.0, 0.06)}, "cls": {"cloud": (5.0, 0.005)}}
    return Sample(
        0.0,
        10.0,
        cached,
        {"det": 400},
        served,
        replicas=replicas,
        gateway_buckets=_cumulative({0.01: 5, 0.05: 6, 0.1: 3, 0.25: 1}),
    )


def test_p95_and_cpu_per_request_observed_from_the_replicas_and_predicted_from_per_frame_work(
    documents: list[dict],
) -> None:
    from edgeaigc.cluster.sim_to_real import Bed, compare_with_overall

    bed = Bed(work_samples_ms={"det": [38.0, 40.0, 40.0, 42.0], "cls": [2.0]})
    (cls, det), overall = compare_with_overall(documents, [_sampled(["det"])], bed)
    # the replica's p95 (9.5th of 10: 1.5 of the 2 requests into 50-100 ms) plus the gateway's 10 ms more on
    # the mean than the replica
    assert det.observed_p95_ms == pytest.approx(50 + 50 * 1.5 / 2 + 10, abs=0.1)
    assert det.observed_cpu_ms == pytest.approx(50.0) and det.predicted_cpu_ms == pytest.approx(40.0)
    assert det.cpu_error == pytest.approx(-0.2)
    assert cls.observed_cpu_ms == pytest.approx(3.0) and cls.predicted_cpu_ms == pytest.approx(2.0)
    # every sample fits the 40 ms quota: the spread is the work's own, whose p95 through the buckets is
    # that of the observed replica minus what the gateway adds, read the same way
    assert det.predicted_p95_ms is not None and det.predicted_p95_ms < det.observed_p95_ms
    # a frame with more work than a period's quota waits for the next period: the p95 grows, the mean not
    heavy = Bed(work_samples_ms={"det": [38.0, 40.0, 40.0, 42.0, 40.0, 39.0, 41.0, 40.0, 40.0, 45.0, 90.0]})
    (_, heavy_det), _ = compare_with_overall(documents, [_sampled(["det"])], heavy)
    assert heavy_det.predicted_ms == det.predicted_ms
    assert heavy_det.predicted_p95_ms is not None and heavy_det.predicted_p95_ms > det.predicted_p95_ms + 20
    # all requests: the gateway's own histogram (14th of 15 requests: 0.25 into 100-250 ms), the hit rate
    assert overall.requests == 15
    assert overall.observed_hit_rate == pytest.approx(10 / 15, abs=1e-4)
    assert overall.predicted_hit_rate == pytest.approx(10 / 15, abs=1e-4)
    assert overall.observed_p95_ms == pytest.approx(100 + 150 * (14.25 - 14) / 1, abs=0.1)
    assert overall.observed_cpu_ms == pytest.approx((10 * 50 + 5 * 3) / 15, abs=0.1)
    # predicted for all requests: every det time (30-32 ms of work within its quota, plus the overhead) in the
    # 25-50 ms bucket, every cls time under 5 ms: the 14.25th of 15 is 9.25/10 into the det bucket
    light = Bed(work_samples_ms={"det": [30.0, 32.0], "cls": [2.0]})
    _, light_overall = compare_with_overall(documents, [_sampled(["det"])], light)
    assert light_overall.predicted_p95_ms == pytest.approx(25 + 25 * 9.25 / 10, abs=0.1)
    # cls was planned for the Pi but served by the cloud (its replica was starting): a predicted hit
    (_, _), starting = compare_with_overall(documents, [_sampled(["det", "cls"])], bed)
    assert starting.predicted_hit_rate == pytest.approx(1.0)
    table = format_table([cls, det], overall)
    assert "all requests" in table and "hit 67%/67%" in table and "60.0ms" in table


def test_a_run_without_the_new_samples_shows_dashes_and_a_new_run_reads_back(
    documents: list[dict], tmp_path: Path
) -> None:
    import json

    import yaml

    from edgeaigc.cluster.sim_to_real import Bed, compare_with_overall, load_run, report

    old = Sample(0.0, 10.0, ["det"], {"det": 400}, {"det": {"edge": (1.0, 0.1)}})
    (point,), overall = compare_with_overall(documents, [old])
    assert point.observed_p95_ms is None and point.predicted_p95_ms is None and point.observed_cpu_ms is None
    assert overall.observed_p95_ms is None
    assert "—" in format_table([point], overall)
    # a new run's summary.json and fleet.yaml read back into the same figures
    sample = _sampled(["det"])
    work = {"det": [38.0, 40.0, 42.0], "cls": [2.0]}
    summary = {
        "load": "load average 0.5",
        "work_samples_ms": work,
        "phases": [{"algorithm": a, "samples": [sample.to_dict()]} for a in ("td3", "lru")],
    }
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump_all(documents))
    read_documents, phases, load, bed = load_run(tmp_path)
    assert phases["td3"][0] == sample and bed.work_samples_ms == work and load == "load average 0.5"
    direct = report(documents, {"td3": [sample], "lru": [sample]}, Bed(work_samples_ms=work))
    assert report(read_documents, phases, bed).to_dict() == direct.to_dict()
    plot(direct.calibrated, tmp_path / "s2r.png", "test")
    assert (tmp_path / "s2r.png").stat().st_size > 0
