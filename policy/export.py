"""ONNX export of a trained actor, and ``edgeaigc export --checkpoint DIR/best.pt --output actor.onnx``.

The exported graph takes ONE observation, without a batch dimension, exactly as the encoder
returns it: inputs ``pair`` ``[E, M, P]`` and ``camera`` ``[U, C]`` (float32), output
``action`` ``[2*E*M + U]`` in the env's order, already scaled to ``[-1, 1]``. ``E``, ``M`` and
``U`` are dynamic axes, so one file serves any fleet; ``P`` and ``C`` are fixed by the encoder.

Beside ``actor.onnx`` goes ``actor.json``: the scenario and algorithm it was trained with, the
training steps, its evaluation figures, and the encoder's feature names
(:data:`~edgeaigc.policy.observation.PAIR_FEATURES`, ``CAMERA_FEATURES``), which
:class:`~edgeaigc.policy.actor_runner.OnnxActorPolicy` checks against the running encoder.
The same fields are embedded in the ONNX file's ``metadata_props`` (one JSON value per key),
so an actor shipped as bytes alone (the operator's ConfigMap) is checked too.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgeaigc.policy.networks import Actor
from edgeaigc.policy.observation import CAMERA_FEATURES, PAIR_FEATURES

#: ONNX opset of exported actors.
OPSET = 17
#: Version of the metadata JSON layout.
METADATA_FORMAT = 1


def metadata_path(onnx_path: str | Path) -> Path:
    """Where the metadata JSON of an exported actor lives (``actor.onnx`` -> ``actor.json``)."""
    return Path(onnx_path).with_suffix(".json")


def export_actor(
    actor: Actor,
    path: str | Path,
    example_obs: dict[str, np.ndarray],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``actor`` to ONNX at ``path`` (dynamic E, M, U) and its metadata JSON beside it.

    Args:
        actor: the trained actor (put in eval mode, on CPU, for the export).
        path: the ``.onnx`` file to write.
        example_obs: one encoded observation (``{"pair": [E, M, P], "camera": [U, C]}``) to trace.
        metadata: extra fields for the JSON (scenario, algorithm, steps, evaluation figures).

    Returns:
        The path of the ONNX file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    actor = actor.to("cpu").eval()
    pair = torch.as_tensor(np.asarray(example_obs["pair"], np.float32))
    camera = torch.as_tensor(np.asarray(example_obs["camera"], np.float32))
    if pair.dim() != 3 or camera.dim() != 2:
        raise ValueError("example_obs must be one observation: pair [E, M, P] and camera [U, C]")
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated upstream, but it needs no onnxscript and
        # handles the dynamic axes of this small graph; the torch.export one can replace it.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            actor,
            (pair, camera),
            str(path),
            input_names=["pair", "camera"],
            output_names=["action"],
            dynamic_axes={
                "pair": {0: "num_nodes", 1: "num_models"},
                "camera": {0: "num_cameras"},
                "action": {0: "action_size"},
            },
            opset_version=OPSET,
            dynamo=False,
        )
    document: dict[str, Any] = {
        "format": METADATA_FORMAT,
        "inputs": {"pair": "[E, M, P] float32", "camera": "[U, C] float32"},
        "output": "action [2*E*M + U] float32 in [-1, 1]",
        "pair_features": list(PAIR_FEATURES),
        "camera_features": list(CAMERA_FEATURES),
        "hidden": actor.hidden,
        "opset": OPSET,
        **(metadata or {}),
    }
    embed_metadata(path, document)
    metadata_path(path).write_text(json.dumps(document, indent=2) + "\n")
    return path


def embed_metadata(path: str | Path, document: dict[str, Any]) -> None:
    """Store ``document`` in the ONNX file's own metadata (``metadata_props``, one JSON per key).

    The operator receives the ONNX bytes alone (from a ConfigMap), without the JSON beside it;
    embedded, the feature names still travel with the weights and are checked at load time.
    """
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in document.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def load_actor_checkpoint(path: str | Path) -> tuple[Actor, dict[str, Any]]:
    """The actor stored in a ``best.pt``/``checkpoint.pt`` and the checkpoint's metadata."""
    state = torch.load(Path(path), map_location="cpu", weights_only=False)
    if "actor" not in state or "actor_spec" not in state:
        raise ValueError(f"{path}: not an edgeaigc actor checkpoint (no 'actor'/'actor_spec')")
    spec = state["actor_spec"]
    actor = Actor(spec["pair_features"], spec["camera_features"], spec["hidden"])
    actor.load_state_dict(state["actor"])
    return actor, dict(state.get("metadata", {}))


def actor_from_onnx(model: str | Path | bytes) -> tuple[Actor, dict[str, Any]]:
    """The torch :class:`Actor` of an exported ONNX actor, and its embedded metadata (a fine-tune's start).

    The exporter folds each ``nn.Linear`` weight into a transposed ``MatMul`` initializer named after no
    parameter; the node's scope (``/pair_body/pair_body.0/own/MatMul``) names the module, which is how
    the weights are found. The recovered actor is checked against onnxruntime on a random observation,
    so a graph this reading does not understand is refused rather than misread.

    Raises:
        ValueError: not an ONNX actor of this network shape, or the recovered one computes otherwise.
    """
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    try:
        graph_model = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(str(model))
    except Exception as error:  # onnx raises DecodeError and friends
        raise ValueError(f"not an ONNX model: {error}") from error
    metadata: dict[str, Any] = {}
    for entry in graph_model.metadata_props:
        try:
            metadata[entry.key] = json.loads(entry.value)
        except json.JSONDecodeError:
            metadata[entry.key] = entry.value
    if metadata.get("pair_features") != list(PAIR_FEATURES) or metadata.get("camera_features") != list(CAMERA_FEATURES):
        raise ValueError("the actor was exported with other observation features (or without metadata)")
    initializers = {i.name: numpy_helper.to_array(i) for i in graph_model.graph.initializer}
    actor = Actor(len(PAIR_FEATURES), len(CAMERA_FEATURES), int(metadata.get("hidden", 64)))
    state = {name: value.clone() for name, value in actor.state_dict().items()}
    found: set[str] = set()
    for node in graph_model.graph.node:
        weights = [name for name in node.input if name in initializers]
        if node.op_type not in ("MatMul", "Add") or len(weights) != 1:
            continue
        # Scopes nest: /pair_body/pair_body.0/own/MatMul is module pair_body.0.own, /pair_head/Add pair_head.
        module = ""
        for scope in node.name.strip("/").split("/")[:-1]:
            module = scope if not module or scope.startswith(f"{module}.") else f"{module}.{scope}"
        parameter = f"{module}.weight" if node.op_type == "MatMul" else f"{module}.bias"
        value = initializers[weights[0]]
        if parameter in state:
            state[parameter] = torch.as_tensor(value.T.copy() if node.op_type == "MatMul" else value.copy())
            found.add(parameter)
    for name in ("action_scale", "action_bias"):
        if name in initializers:
            state[name] = torch.as_tensor(initializers[name].copy()).reshape(state[name].shape)
            found.add(name)
    # A parameter the exporter folded away entirely (all zeros: a hand-set actor) has no node left; it is
    # taken as zero, and the comparison below tells whether that was right.
    for name in set(state) - found:
        state[name] = torch.zeros_like(state[name])
    try:
        actor.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"the ONNX weights do not fit the actor: {error}") from error
    rng = np.random.default_rng(0)
    pair = rng.normal(size=(2, 3, len(PAIR_FEATURES))).astype(np.float32)
    camera = rng.normal(size=(4, len(CAMERA_FEATURES))).astype(np.float32)
    session = ort.InferenceSession(graph_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["action"], {"pair": pair, "camera": camera})
    with torch.no_grad():
        recovered = actor.eval()(torch.as_tensor(pair), torch.as_tensor(camera)).numpy()
    if not np.allclose(recovered, np.asarray(expected).reshape(recovered.shape), atol=1e-4):
        raise ValueError("the weights recovered from the ONNX graph do not reproduce its actions")
    return actor, metadata


def example_observation(scenario_name: str) -> dict[str, np.ndarray]:
    """An encoded observation of a bundled or file scenario (first slot of seed 0)."""
    from edgeaigc.policy.env import EdgePlacementEnv

    observation, _ = EdgePlacementEnv(scenario_name).reset(seed=0)
    return observation


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, required=True, help="best.pt or checkpoint.pt of `edgeaigc train`")
    parser.add_argument("--output", type=Path, required=True, help="ONNX file to write (metadata JSON beside it)")
    parser.add_argument(
        "--scenario", default=None, help="scenario for the example observation (default: the one trained on)"
    )


def run(args: argparse.Namespace) -> int:
    from edgeaigc.policy.scenario import ScenarioError

    if not args.checkpoint.exists():
        print(f"error: checkpoint {args.checkpoint} does not exist", file=sys.stderr)
        return 2
    try:
        actor, metadata = load_actor_checkpoint(args.checkpoint)
    except (ValueError, RuntimeError, KeyError, OSError) as error:
        print(f"error: cannot read {args.checkpoint}: {error}", file=sys.stderr)
        return 2
    if metadata.get("pair_features") not in (None, list(PAIR_FEATURES)) or metadata.get("camera_features") not in (
        None,
        list(CAMERA_FEATURES),
    ):
        print(f"error: {args.checkpoint} was trained with other observation features", file=sys.stderr)
        return 2
    scenario = args.scenario or metadata.get("scenario_path") or metadata.get("scenario") or "tiny"
    try:
        example = example_observation(scenario)
    except ScenarioError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    export_actor(actor, args.output, example, metadata)
    print(f"wrote {args.output} and {metadata_path(args.output)}")
    return 0
