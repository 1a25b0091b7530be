"""API group, label keys and names shared by every part of the operator (one place).

The names the traffic twin and the gateways read too live in :mod:`edgeaigc.policy.resources`
(nothing imports the operator) and are re-exported here.
"""

import os

from edgeaigc.policy.resources import (
    ANNOTATION_COMPUTE_SHARE,
    COMPONENT_CLOUD_INFERENCE,
    COMPONENT_EDGE_INFERENCE,
    COMPONENT_ROUTING,
    GROUP,
    LABEL_COMPONENT,
    LABEL_EDGE_NODE,
    LABEL_MANAGED_BY,
    LABEL_MODEL,
    LABEL_POLICY,
    LABEL_TIER,
    MANAGED_BY,
    PLURAL_CAMERAS,
    PLURAL_EDGE_NODES,
    PLURAL_MODELS,
    PLURAL_POLICIES,
    ROUTING_TABLE_KEY,
    VERSION,
)

FIELD_MANAGER = "edgeaigc-operator"

INFERENCE_PORT = 8080
DEFAULT_INFERENCE_IMAGE = os.environ.get("EDGEAIGC_INFERENCE_IMAGE", "ghcr.io/edgeaigc/inference:0.1.0")
#: A kubernetes.io/tls Secret (tls.crt, tls.key, ca.crt: what cert-manager writes) in the policy's namespace:
#: the cloud replicas serve HTTPS with it and the routing table's cloud URLs are https://. Empty: plain HTTP.
CLOUD_TLS_SECRET = os.environ.get("EDGEAIGC_CLOUD_TLS_SECRET", "")
#: Where a pod mounts that Secret.
TLS_MOUNT_PATH = "/etc/edgeaigc/tls"

__all__ = [
    "ANNOTATION_COMPUTE_SHARE",
    "CLOUD_TLS_SECRET",
    "COMPONENT_CLOUD_INFERENCE",
    "COMPONENT_EDGE_INFERENCE",
    "COMPONENT_ROUTING",
    "DEFAULT_INFERENCE_IMAGE",
    "FIELD_MANAGER",
    "GROUP",
    "INFERENCE_PORT",
    "LABEL_COMPONENT",
    "LABEL_EDGE_NODE",
    "LABEL_MANAGED_BY",
    "LABEL_MODEL",
    "LABEL_POLICY",
    "LABEL_TIER",
    "MANAGED_BY",
    "PLURAL_CAMERAS",
    "PLURAL_EDGE_NODES",
    "PLURAL_MODELS",
    "PLURAL_POLICIES",
    "ROUTING_TABLE_KEY",
    "TLS_MOUNT_PATH",
    "VERSION",
]
