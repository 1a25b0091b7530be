"""Scenario files, trace-driven demand and the Gymnasium contract."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from gymnasium.utils.env_checker import check_env

import edgeaigc.policy  # registers the environment
from edgeaigc.policy.demand import DemandGenerator, read_count_trace, resample_counts
from edgeaigc.policy.env import EdgePlacementEnv
from edgeaigc.policy.scenario import BUNDLED_SCENARIOS, ScenarioError, load_scenario, scenario_from_dict
from tests.conftest import one_node_document


@pytest.mark.parametrize("name", BUNDLED_SCENARIOS)
def test_bundled_scenarios_load(name: str) -> None:
    scenario = load_scenario(name)
    assert scenario.num_nodes >= 1 and scenario.num_cameras >= 1
    assert np.all(scenario.model_size_mb > 0)


def test_issue_sizes_of_traffic_city_and_large() -> None:
    city, large = load_scenario("traffic-city"), load_scenario("large")
    assert city.num_cameras == 40 and city.num_models == 12
    assert large.num_nodes >= 100 and large.num_cameras >= 1000 and large.num_models >= 50


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cloud": {"core_speed": 1}}, r"cloud\.price_per_core_second is required"),
        ({"slot_seconds": -5}, r"slot_seconds must be > 0"),
        ({"rho_max": 1.5}, r"rho_max must be < 1"),
    ],
)
def test_bad_scenarios_name_the_field(change: dict, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(one_node_document(**change))


def test_bad_model_stage_names_the_model() -> None:
    document = one_node_document()
    document["models"][0]["stage"] = "segmentation"
    with pytest.raises(ScenarioError, match=r"models\[det\]\.stage must be one of"):
        scenario_from_dict(document)


def test_a_stage_without_a_model_gets_no_requests_and_the_others_are_unchanged() -> None:
    """The flow figures of `edgeaigc camera` are computed in the camera: a fleet may declare no flow model."""
    document = one_node_document()
    document["episode_slots"] = 20
    full = scenario_from_dict(document)
    document["models"] = [m for m in document["models"] if m["stage"] != "flow"]
    partial = scenario_from_dict(document)
    assert partial.num_models == full.num_models - 1
    rng_full, rng_partial = np.random.default_rng(3), np.random.default_rng(3)
    full_rates = DemandGenerator(full).episode(rng_full).rates
    partial_rates = DemandGenerator(partial).episode(rng_partial).rates
    kept = [i for i, name in enumerate(full.model_names) if name in partial.model_names]
    assert partial_rates.sum() > 0 and np.allclose(partial_rates, full_rates[..., kept])
    with pytest.raises(ScenarioError, match="models must be a non-empty list"):
        scenario_from_dict({**document, "models": []})


def test_unknown_scenario_lists_the_bundled_ones() -> None:
    with pytest.raises(ScenarioError, match="traffic-city"):
        load_scenario("no-such-scenario")


def _calibrated_scenario_file(tmp_path: Path, work: dict[str, float], **overrides: object) -> Path:
    """A one-node scenario in tmp_path/scenarios whose det and cls take work_ms from tmp_path/calibration."""
    (tmp_path / "calibration").mkdir()
    (tmp_path / "calibration" / "work_ms.json").write_text(
        json.dumps({"models": {name: {"work_ms": ms, "basis": "measured"} for name, ms in work.items()}})
    )
    document = one_node_document(calibration="../calibration/work_ms.json", **overrides)
    document["models"][0]["work_ms"] = "calibrated"
    document["models"][1].update(work_ms="calibrated", calibrated_as="cls-stand-in")
    (tmp_path / "scenarios").mkdir()
    path = tmp_path / "scenarios" / "mine.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_work_from_a_calibration_file(tmp_path: Path) -> None:
    scenario = load_scenario(_calibrated_scenario_file(tmp_path, {"det": 16.7, "cls-stand-in": 0.5}))
    # det and cls (through calibrated_as) from the file, relative to the scenario file; flow keeps its 1 ms.
    np.testing.assert_allclose(scenario.model_work_s, [0.0167, 0.0005, 0.001])


def test_a_model_missing_from_the_calibration_file_is_named(tmp_path: Path) -> None:
    path = _calibrated_scenario_file(tmp_path, {"det": 16.7, "other": 1.0})
    with pytest.raises(
        ScenarioError, match=r"models\[cls\]\.work_ms is 'calibrated' but calibration .* no model 'cls-stand-in'"
    ):
        load_scenario(path)


def test_calibrated_work_needs_a_calibration_file() -> None:
    document = one_node_document()
    document["models"][0]["work_ms"] = "calibrated"
    with pytest.raises(ScenarioError, match=r"models\[det\]\.work_ms is 'calibrated' but the scenario names no"):
        scenario_from_dict(document)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "file does not exist"),
        ("{not json", "not a readable JSON file"),
        ('{"models": {"det": {"p90_ms": 3}}}', r"models\.det\.work_ms is required"),
        ('{"models": {"det": {"work_ms": -1}}}', r"models\.det\.work_ms must be > 0"),
    ],
)
def test_bad_calibration_files_name_the_problem(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "work_ms.json").write_text(content)
    document = one_node_document(calibration="work_ms.json")
    document["models"][0]["work_ms"] = "calibrated"
    with pytest.raises(ScenarioError, match=message):
        scenario_from_dict(document, base_dir=tmp_path)


def test_traffic_city_calibrated_uses_the_shipped_measurements() -> None:
    calibration = json.loads((Path(edgeaigc.policy.__file__).parent / "calibration" / "work_ms.json").read_text())
    city, calibrated = load_scenario("traffic-city"), load_scenario("traffic-city-calibrated")
    assert calibrated.model_names == city.model_names
    expected = [calibration["models"][name]["work_ms"] / 1000.0 for name in calibrated.model_names]
    np.testing.assert_allclose(calibrated.model_work_s, expected)
    # Everything but the work per request is traffic-city's.
    np.testing.assert_array_equal(calibrated.model_size_mb, city.model_size_mb)
    np.testing.assert_array_equal(calibrated.camera_fps, city.camera_fps)


def test_custom_scenario_file_with_a_csv_trace(tmp_path: Path) -> None:
    # Two counters, 30 s apart for an hour: the second is twice as busy as the first.
    rows = ["timestamp,north,south"] + [f"{1_700_000_000 + 30 * i},{i % 4},{2 * (i % 4)}" for i in range(120)]
    (tmp_path / "counts.csv").write_text("\n".join(rows) + "\n")
    document = one_node_document(demand={"trace": {"path": "counts.csv"}})
    document["cameras"]["count"] = 2
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(document))
    scenario = load_scenario(tmp_path / "mine.yaml")
    trace = DemandGenerator(scenario).episode(np.random.default_rng(0), num_slots=10)
    assert trace.rates.shape == (11, 2, 3)
    # Activity is each column over its own mean, so both cameras get the same profile here.
    np.testing.assert_allclose(trace.rates[:, 0].sum(axis=1), trace.rates[:, 1].sum(axis=1))


def test_resample_sums_counts_into_slots() -> None:
    times = np.array([0.0, 10, 20, 60, 70, 130])
    counts = np.array([[1.0], [2], [3], [4], [0], [6]])
    starts, activity = resample_counts(times, counts, 60)
    np.testing.assert_allclose(starts, [0, 60, 120])
    np.testing.assert_allclose(activity[:, 0], np.array([6, 4, 6]) / (16 / 3))


def test_a_coarser_trace_is_held_over_the_slots_it_covers() -> None:
    # Hourly counts with 60 s slots: each hour's count is spread over its 60 slots, not put in one.
    times = 1_700_000_000 + 3600.0 * np.arange(3)
    counts = np.array([[600.0], [1200], [1800]])
    starts, activity = resample_counts(times, counts, 60)
    assert len(starts) == 180
    np.testing.assert_allclose(np.diff(starts), 60)
    per_slot = activity[:, 0] * (counts.sum() / 180)  # activity is count over the mean count
    np.testing.assert_allclose(per_slot, np.repeat([10.0, 20, 30], 60))
    assert per_slot.sum() == pytest.approx(counts.sum())


def test_a_finer_trace_is_summed_and_keeps_its_total() -> None:
    rng = np.random.default_rng(0)
    times = 10.0 * np.arange(60)  # ten minutes of 10 s counts
    counts = rng.integers(0, 9, size=(60, 2)).astype(float)
    starts, activity = resample_counts(times, counts, 60)
    assert len(starts) == 10
    expected = counts.reshape(10, 6, 2).sum(axis=1)
    np.testing.assert_allclose(activity, expected / expected.mean(axis=0))


def test_a_trace_interval_that_does_not_divide_the_slot_is_split_in_proportion() -> None:
    # 45 s counts of 45 vehicles (one a second) in 60 s slots: 60 a slot, none of 45 or 90.
    times = 45.0 * np.arange(16)  # 720 s, twelve slots
    counts = np.full((16, 1), 45.0)
    starts, activity = resample_counts(times, counts, 60)
    assert len(starts) == 12
    np.testing.assert_allclose(activity[:, 0], 1.0)
    # And 90 s counts in 60 s slots: each row spreads over one and a half slots.
    times = 90.0 * np.arange(4)
    counts = np.array([[90.0], [180], [90], [180]])
    _, activity = resample_counts(times, counts, 60)
    per_slot = activity[:, 0] * counts.sum() / 6
    np.testing.assert_allclose(per_slot, [60, 30 + 60, 120, 60, 30 + 60, 120])
    assert per_slot.sum() == pytest.approx(counts.sum())


def test_a_hole_in_a_trace_stays_empty() -> None:
    # 60 s counts with the counter down for ten minutes: the count after the hole is not smeared over it.
    times = np.r_[60.0 * np.arange(5), 60.0 * np.arange(15, 20)]
    counts = np.full((10, 1), 6.0)
    _, activity = resample_counts(times, counts, 60)
    per_slot = activity[:, 0] * counts.sum() / 20
    np.testing.assert_allclose(per_slot, np.r_[np.full(5, 6.0), np.zeros(10), np.full(5, 6.0)])


def test_trace_errors_name_row_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("timestamp,count\n2024-01-01T00:00:00,3\nyesterday,4\n")
    with pytest.raises(ScenarioError, match="row 3: timestamp 'yesterday'"):
        read_count_trace(path, "timestamp", ())
    path.write_text("time,count\n1,2\n3,4\n")
    with pytest.raises(ScenarioError, match="no column 'timestamp'"):
        read_count_trace(path, "timestamp", ())


def test_env_passes_the_gymnasium_checker() -> None:
    check_env(gym.make("edgeaigc/EdgePlacement-v0", scenario="tiny").unwrapped, skip_render_check=True)


def test_same_seed_same_episode() -> None:
    first, second = EdgePlacementEnv("tiny"), EdgePlacementEnv("tiny")
    first.reset(seed=42)
    second.reset(seed=42)
    assert first.trace is not None and second.trace is not None
    np.testing.assert_array_equal(first.trace.counts, second.trace.counts)
    action = np.zeros(first.action_space.shape, np.float32)
    assert first.step(action)[1] == second.step(action)[1]


def test_info_reports_the_figures_any_agent_is_scored_on() -> None:
    env = gym.make("edgeaigc/EdgePlacement-v0", scenario="tiny")
    env.reset(seed=0)
    steps, truncated = 0, False
    while not truncated:
        _, reward, terminated, truncated, info = env.step(env.action_space.sample())
        steps += 1
        assert not terminated
        assert 0.0 <= info["hit_rate"] <= 1.0 and info["mean_response_time_s"] > 0 and info["cost"] >= 0
        assert reward < 0
    assert steps == load_scenario("tiny").episode_slots


def test_demand_drifts_and_follows_the_day() -> None:
    """Popularity is not frozen: the models in use change over an episode."""
    scenario = load_scenario("traffic-city")
    trace = DemandGenerator(scenario).episode(np.random.default_rng(5))
    in_use_first = trace.rates[1] > 0
    in_use_last = trace.rates[-1] > 0
    assert (in_use_first != in_use_last).any()
    assert trace.rates.sum(axis=(1, 2)).std() > 0
