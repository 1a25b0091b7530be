"""Every placement policy by name, for the benchmark, the CLI and the operator.

The built-in (non-learned) policies are made from nothing; a learned one (TD3, DDPG) runs a
trained actor exported to ONNX, given as a file or as its bytes (the operator's ConfigMap).
:func:`shipped_actor` finds the actors the package ships.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path

from edgeaigc.policy.base import PlacementPolicy
from edgeaigc.policy.baselines import LFUPolicy, LRUPolicy, RandomPolicy, StaticTopKPolicy
from edgeaigc.policy.myopic import MyopicPolicy

BUILT_IN_POLICIES: dict[str, Callable[[], PlacementPolicy]] = {
    "random": RandomPolicy,
    "lru": LRUPolicy,
    "lfu": LFUPolicy,
    "static_topk": StaticTopKPolicy,
    "myopic": MyopicPolicy,
}
#: Policies that run a trained actor.
LEARNED_POLICIES: tuple[str, ...] = ("td3", "ddpg")
#: The actor that serves scenarios without a shipped actor of their own: the general actor,
#: trained over a family of drawn worlds (``edgeaigc train --family default``).
FALLBACK_ACTOR_SCENARIO = "general"


class PolicyUnavailable(RuntimeError):
    """A policy cannot run (unknown name, no actor, oracle too large, ...); the message says why."""


def shipped_actors() -> Path:
    """The package's actor directory, ``policy/actors`` (``<scenario>-<algorithm>.onnx`` and ``.json``)."""
    return Path(str(resources.files("edgeaigc.policy").joinpath("actors")))


def shipped_actor(scenario_name: str, algorithm: str = "td3", actor_dir: Path | None = None) -> tuple[Path, str]:
    """The ONNX actor to use for ``algorithm`` on a scenario and a note on where it came from.

    Actors are permutation-equivariant, so one trained on another fleet still runs; the note
    says so when the scenario has no actor of its own.

    Args:
        actor_dir: where to look instead of :func:`shipped_actors`.

    Raises:
        PolicyUnavailable: neither the scenario's own actor nor the fallback scenario's exists.
    """
    directory = actor_dir or shipped_actors()
    own = directory / f"{scenario_name}-{algorithm}.onnx"
    if own.exists():
        return own, f"trained on {scenario_name}"
    fallback = directory / f"{FALLBACK_ACTOR_SCENARIO}-{algorithm}.onnx"
    if fallback.exists():
        return fallback, f"the {FALLBACK_ACTOR_SCENARIO} actor (no actor trained on {scenario_name})"
    raise PolicyUnavailable(f"no {algorithm} actor in {directory} (train one with `edgeaigc train`)")


def make_policy(algorithm: str, actor: Path | bytes | None = None, source: str | None = None) -> PlacementPolicy:
    """The policy named ``algorithm`` (numpy and onnxruntime only: the operator calls this).

    Args:
        actor: for a learned policy, its ONNX actor: a file, or the file's bytes; None: the
            shipped general actor (``policy/actors/general-<algorithm>.onnx``).
        source: where bytes came from, for error messages (e.g. ``ConfigMap city-actor``).

    Raises:
        PolicyUnavailable: an unknown name, or a learned policy without an actor (none given and
            no general one shipped).
        ActorLoadError: the actor cannot be used (corrupt, trained on other features).
    """
    if algorithm in BUILT_IN_POLICIES:
        return BUILT_IN_POLICIES[algorithm]()
    if algorithm not in LEARNED_POLICIES:
        known = ", ".join([*BUILT_IN_POLICIES, *LEARNED_POLICIES])
        raise PolicyUnavailable(f"unknown policy {algorithm!r}; choose from {known}")
    if actor is None:
        # No actor given (a PlacementPolicy without spec.actor): the shipped general actor.
        general = shipped_actors() / f"{FALLBACK_ACTOR_SCENARIO}-{algorithm}.onnx"
        if not general.exists():
            raise PolicyUnavailable(f"{algorithm} needs an actor (no general {algorithm} actor is shipped)")
        actor, source = general, source or f"the shipped general actor {general.name}"
    from edgeaigc.policy.actor_runner import OnnxActorPolicy

    return OnnxActorPolicy(actor, name=algorithm, source=source)
