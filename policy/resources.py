"""The names a fleet's Kubernetes objects share: the ``edgeaigc.io`` API and what is placed for a policy.

The operator writes these objects and the traffic twin (like the gateways) reads them, so the
API group, the custom resources' plurals, the labels of the placed Deployments and the name and
key of the routing table ConfigMap live here, where both can import them without importing the
operator (the operator's :mod:`~edgeaigc.operator.constants` re-exports them next to what only
the operator uses).
"""

from __future__ import annotations

import hashlib

GROUP = "edgeaigc.io"
VERSION = "v1alpha1"

PLURAL_CAMERAS = "cameras"
PLURAL_EDGE_NODES = "edgenodes"
PLURAL_MODELS = "inferencemodels"
PLURAL_POLICIES = "placementpolicies"

# Labels on everything the operator creates; selectors use them to find what it owns.
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGED_BY = "edgeaigc"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_POLICY = "edgeaigc.io/policy"
LABEL_MODEL = "edgeaigc.io/model"
LABEL_EDGE_NODE = "edgeaigc.io/edge-node"
LABEL_TIER = "edgeaigc.io/tier"

COMPONENT_EDGE_INFERENCE = "edge-inference"
COMPONENT_CLOUD_INFERENCE = "cloud-inference"
COMPONENT_ROUTING = "routing-table"
#: The ConfigMap of site peers each newly placed edge replica fetches its model file from first.
COMPONENT_PEERS = "site-peers"

ANNOTATION_COMPUTE_SHARE = "edgeaigc.io/compute-share"
ROUTING_TABLE_KEY = "routing.json"


def object_name(*parts: str) -> str:
    """``edgeaigc-<parts>``, a valid DNS label of at most 63 characters (hash-suffixed if cut)."""
    name = "-".join(["edgeaigc", *parts]).lower()
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-')}-{digest}"
