"""Actor and critics that serve any fleet: shared weights over (node, model) pairs and cameras.

The observation is a set of per-pair rows ``pair[E, M, P]`` and per-camera rows ``camera[U, C]``
(:func:`~edgeaigc.policy.observation.encode`); the action is one value per row
(:mod:`~edgeaigc.policy.plan`). Nothing here has a width that depends on ``E``, ``M`` or ``U``:

- :class:`Actor` is permutation-*equivariant*: permuting nodes, models or cameras in the
  input permutes the action the same way. Each pair is scored by a shared MLP from its own
  features and the means over its node's models, over its model's nodes and over the whole
  fleet (:class:`PairContextLayer`); each camera by a shared MLP from its features, the mean
  camera and the mean pair.
- :class:`QNetwork` is permutation-*invariant*: per-pair and per-camera embeddings of
  ``[features, action]`` are mean-pooled, concatenated and mapped to ``Q``.

Every module takes a batch dimension (replay batches: ``pair[B, E, M, P]``,
``camera[B, U, C]``, ``action[B, 2EM + U]``); the actor also takes a single observation
without it (``pair[E, M, P]`` -> ``action[2EM + U]``), which is the form exported to ONNX.
"""

from __future__ import annotations

import torch
from torch import nn


class PairContextLayer(nn.Module):
    """One equivariant layer over the ``[B, E, M, D]`` pair grid.

    ``out = relu(W_self x + W_node mean_m(x) + W_model mean_e(x) + W_fleet mean_em(x) + b)``,
    which is a linear layer over the concatenation ``[x, node mean, model mean, fleet mean]``
    written so that each mean is transformed once, not once per pair.
    """

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.own = nn.Linear(in_features, out_features)
        self.node = nn.Linear(in_features, out_features, bias=False)
        self.model = nn.Linear(in_features, out_features, bias=False)
        self.fleet = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        node_mean = x.mean(dim=2, keepdim=True)  # [B, E, 1, D]: over the node's models
        model_mean = x.mean(dim=1, keepdim=True)  # [B, 1, M, D]: over the model's nodes
        fleet_mean = x.mean(dim=(1, 2), keepdim=True)  # [B, 1, 1, D]
        return torch.relu(self.own(x) + self.node(node_mean) + self.model(model_mean) + self.fleet(fleet_mean))


def _mlp(in_features: int, hidden: int, out_features: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_features, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, out_features),
    )


class Actor(nn.Module):
    """Deterministic policy ``(pair, camera) -> [cache score E*M | compute tilt E*M | bw tilt U]``.

    Args:
        pair_features: ``P``, columns of ``pair`` (``len(PAIR_FEATURES)``).
        camera_features: ``C``, columns of ``camera`` (``len(CAMERA_FEATURES)``).
        hidden: width of every hidden layer.
        action_low: lower bound of the action space (the env's is -1).
        action_high: upper bound of the action space (the env's is +1).
    """

    action_scale: torch.Tensor
    action_bias: torch.Tensor

    def __init__(
        self,
        pair_features: int,
        camera_features: int,
        hidden: int = 64,
        action_low: float = -1.0,
        action_high: float = 1.0,
    ) -> None:
        super().__init__()
        self.pair_features = pair_features
        self.camera_features = camera_features
        self.hidden = hidden
        # Two equivariant layers: the first sees [pair, node mean, model mean, fleet mean] of
        # the features, the second the same means of the first layer's embedding, so a pair's
        # score can depend on how valuable the other models competing for its node are.
        self.pair_body = nn.Sequential(PairContextLayer(pair_features, hidden), PairContextLayer(hidden, hidden))
        self.pair_head = nn.Linear(hidden, 2)
        self.camera_mlp = _mlp(2 * camera_features + pair_features, hidden, 1)
        # Action scaling travels with the weights (and into the ONNX graph).
        self.register_buffer("action_scale", torch.tensor((action_high - action_low) / 2.0))
        self.register_buffer("action_bias", torch.tensor((action_high + action_low) / 2.0))

    def forward(self, pair: torch.Tensor, camera: torch.Tensor) -> torch.Tensor:
        """Flat action ``[B, 2EM + U]`` (or ``[2EM + U]`` for unbatched inputs)."""
        batched = pair.dim() == 4
        if not batched:
            pair, camera = pair.unsqueeze(0), camera.unsqueeze(0)
        pair_out = torch.tanh(self.pair_head(self.pair_body(pair)))  # [B, E, M, 2]
        camera_context = torch.cat(
            [
                camera,
                camera.mean(dim=1, keepdim=True).expand_as(camera),
                pair.mean(dim=(1, 2)).unsqueeze(1).expand(-1, camera.shape[1], -1),
            ],
            dim=-1,
        )
        bandwidth = torch.tanh(self.camera_mlp(camera_context)).squeeze(-1)  # [B, U]
        action = torch.cat([pair_out[..., 0].flatten(1), pair_out[..., 1].flatten(1), bandwidth], dim=1)
        action = action * self.action_scale + self.action_bias
        return action if batched else action.squeeze(0)


def split_flat_action(action: torch.Tensor, num_nodes: int, num_models: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pair_action[B, E, M, 2], camera_action[B, U, 1])`` from ``action[B, 2EM + U]``."""
    pairs = num_nodes * num_models
    cache_score = action[:, :pairs].reshape(-1, num_nodes, num_models)
    compute_tilt = action[:, pairs : 2 * pairs].reshape(-1, num_nodes, num_models)
    return torch.stack([cache_score, compute_tilt], dim=-1), action[:, 2 * pairs :].unsqueeze(-1)


class QNetwork(nn.Module):
    """Permutation-invariant ``Q(observation, action)`` for batches.

    Per pair ``[pair features, cache score, compute tilt]`` and per camera ``[camera features,
    bandwidth tilt]`` are embedded with shared weights (pairs with node/model context, since
    whether a positive score becomes a cached model depends on the node's other scores),
    mean-pooled, concatenated and mapped to one value.
    """

    def __init__(self, pair_features: int, camera_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.pair_body = nn.Sequential(PairContextLayer(pair_features + 2, hidden), PairContextLayer(hidden, hidden))
        self.camera_body = nn.Sequential(
            nn.Linear(camera_features + 1, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, pair: torch.Tensor, camera: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """``Q[B]`` for ``pair[B, E, M, P]``, ``camera[B, U, C]``, ``action[B, 2EM + U]``."""
        pair_action, camera_action = split_flat_action(action, pair.shape[1], pair.shape[2])
        pair_embedding = self.pair_body(torch.cat([pair, pair_action], dim=-1)).mean(dim=(1, 2))
        camera_embedding = self.camera_body(torch.cat([camera, camera_action], dim=-1)).mean(dim=1)
        return self.head(torch.cat([pair_embedding, camera_embedding], dim=-1)).squeeze(-1)


class TwinCritic(nn.Module):
    """Two independent :class:`QNetwork` s (TD3 takes the minimum of their targets)."""

    def __init__(self, pair_features: int, camera_features: int, hidden: int = 64) -> None:
        super().__init__()
        self.q1 = QNetwork(pair_features, camera_features, hidden)
        self.q2 = QNetwork(pair_features, camera_features, hidden)

    def forward(
        self, pair: torch.Tensor, camera: torch.Tensor, action: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.q1(pair, camera, action), self.q2(pair, camera, action)
