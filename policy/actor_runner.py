"""Run an exported actor with onnxruntime as a :class:`~edgeaigc.policy.base.PlacementPolicy`.

No torch here: the operator imports this module. The ONNX file comes from
:func:`edgeaigc.policy.export.export_actor` (inputs ``pair [E, M, P]`` and ``camera [U, C]``
for one observation, output the flat action). The feature names it was trained on are embedded
in the model (and repeated in the metadata JSON beside it, when there is one); they must match
this encoder's, so an actor trained on other features is refused at load time instead of
acting on misread inputs.

Example::

    policy = OnnxActorPolicy("policy/actors/traffic-city-td3.onnx", name="td3")
    policy.reset(scenario, seed=0)
    action = policy.act(observation)  # -> plan.plan_for(scenario, observation, action)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edgeaigc.policy.demonstrator import DEFAULT_HORIZON_SLOTS
from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES, Observation, encode
from edgeaigc.policy.residual import ACTION_MODES, residual_action
from edgeaigc.policy.scenario import Scenario


class ActorLoadError(RuntimeError):
    """An ONNX actor cannot be used: missing, corrupt, or trained on other features."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        """The file (for an actor given as bytes: what they came from)."""
        self.reason = reason


def read_actor_metadata(path: str | Path) -> dict[str, Any]:
    """The metadata JSON beside an ONNX actor (``actor.onnx`` -> ``actor.json``)."""
    metadata_file = Path(path).with_suffix(".json")
    if not metadata_file.exists():
        raise ActorLoadError(path, f"metadata {metadata_file.name} is missing beside it")
    try:
        document = json.loads(metadata_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ActorLoadError(path, f"metadata {metadata_file.name} is not valid JSON: {error}") from error
    if not isinstance(document, dict):
        raise ActorLoadError(path, f"metadata {metadata_file.name} is not a JSON object")
    return document


def embedded_metadata(path: str | Path, session: ort.InferenceSession) -> dict[str, Any]:
    """The metadata stored in the ONNX model itself (see :func:`edgeaigc.policy.export.embed_metadata`)."""
    document: dict[str, Any] = {}
    for key, value in session.get_modelmeta().custom_metadata_map.items():
        try:
            document[key] = json.loads(value)
        except json.JSONDecodeError as error:
            raise ActorLoadError(path, f"embedded metadata {key!r} is not JSON: {error}") from error
    return document


class OnnxActorPolicy:
    """A trained actor (TD3 or DDPG) as a placement policy, on onnxruntime with one thread.

    Args:
        actor: the ``.onnx`` file (embedded metadata; a ``.json`` beside it is checked too), or the
            file's bytes (embedded metadata only), as the operator reads them from a ConfigMap.
        name: the policy's name in reports (``td3``, ``ddpg``).
        source: what to call bytes in error messages (default ``<bytes>``).

    Raises:
        ActorLoadError: the file is missing or not a loadable ONNX model, it carries no metadata,
            or the feature names it was trained on differ from this encoder's.
    """

    def __init__(self, actor: str | Path | bytes, name: str = "td3", source: str | None = None) -> None:
        self.path = None if isinstance(actor, bytes) else Path(actor)
        """The ``.onnx`` file (None: the actor was given as bytes)."""
        self.name = name
        where = str(self.path) if self.path is not None else source or "<bytes>"
        if self.path is not None and not self.path.is_file():
            raise ActorLoadError(where, "no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            model = actor if isinstance(actor, bytes) else str(self.path)
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # onnxruntime raises its own Fail/InvalidGraph/... types
            raise ActorLoadError(where, f"not a loadable ONNX model: {error}") from error
        # Feature names: embedded in the model (always checked), and in the JSON beside a file if any.
        embedded = embedded_metadata(where, self.session)
        beside_file = self.path.with_suffix(".json") if self.path is not None else None
        beside = read_actor_metadata(where) if beside_file is not None and beside_file.exists() else {}
        if not embedded and not beside:
            raise ActorLoadError(where, "no metadata: neither embedded feature names nor a .json beside it")
        for document_name, document in (("embedded metadata", embedded), (beside_file and beside_file.name, beside)):
            for key, expected in (("pair_features", PAIR_FEATURES), ("camera_features", CAMERA_FEATURES)):
                if document and document.get(key) != list(expected):
                    raise ActorLoadError(
                        where,
                        f"{document_name}: trained on {key} {document.get(key)}, but this encoder produces "
                        f"{list(expected)}; retrain or re-export",
                    )
        self.metadata = {**beside, **embedded}
        inputs = {i.name for i in self.session.get_inputs()}
        if inputs != {"pair", "camera"}:
            raise ActorLoadError(where, f"expected inputs 'pair' and 'camera', found {sorted(inputs)}")
        mode = self.metadata.get("action_mode", "direct")
        if mode not in ACTION_MODES:
            raise ActorLoadError(where, f"action_mode {mode!r} is not one of {ACTION_MODES}")
        self.action_mode = str(mode)
        """``direct``: the output is the action; ``residual``: a correction of the teacher's (:mod:`.residual`)."""
        self.teacher_horizon = float(self.metadata.get("teacher_horizon_slots", DEFAULT_HORIZON_SLOTS))
        self.scenario: Scenario | None = None

    def reset(self, scenario: Scenario, seed: int) -> None:
        """Remember the fleet (the actor itself is stateless and deterministic)."""
        self.scenario = scenario

    def act_encoded(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """The action for already-encoded features ``{"pair": [E, M, P], "camera": [U, C]}``."""
        (action,) = self.session.run(
            ["action"],
            {
                "pair": np.ascontiguousarray(features["pair"], dtype=np.float32),
                "camera": np.ascontiguousarray(features["camera"], dtype=np.float32),
            },
        )
        return np.clip(np.asarray(action, dtype=np.float32).reshape(-1), -1.0, 1.0)

    def act(self, observation: Observation) -> np.ndarray:
        """``[cache score E*M | compute tilt E*M | bandwidth tilt U]`` in ``[-1, 1]``."""
        if self.scenario is None:
            raise RuntimeError("call reset(scenario, seed) before act()")
        action = self.act_encoded(encode(self.scenario, observation))
        if self.action_mode == "residual":
            return residual_action(self.scenario, observation, action, self.teacher_horizon)
        return action
