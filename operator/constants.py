"""API group, label keys and names shared by every part of the operator (one place).

The names the traffic twin and the gateways read too live in :mod:`edgeaigc.policy.resources`
(nothing imports the operator) and are re-exported here.
"""

import os

from edgeaigc.policy.resources import (
    ANNOTATION_COMPUTE_SHARE,
    COMPONENT_CLOUD_INFERENCE,
    COMPONENT_EDGE_INFERENCE,
    COMPONENT_PEERS,
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
#: With that Secret: the cloud replicas answer inference only to clients presenting a certificate of its
#: CA (mutual TLS; the gateways' client certificate). Probes and /metrics stay open.
CLOUD_MUTUAL_TLS = os.environ.get("EDGEAIGC_CLOUD_MUTUAL_TLS", "").lower() in ("1", "true", "yes")
#: CPU and memory of each per-model cloud replica (requests = limits; Kubernetes quantities). The
#: default suits a cloud node; the local cluster's real cloud node shares 2 cores among all models.
CLOUD_REPLICA_CPU = os.environ.get("EDGEAIGC_CLOUD_REPLICA_CPU", "1")
CLOUD_REPLICA_MEMORY = os.environ.get("EDGEAIGC_CLOUD_REPLICA_MEMORY", "1Gi")
#: Where a pod mounts that Secret.
TLS_MOUNT_PATH = "/etc/edgeaigc/tls"
#: binaryData key of a candidate actor in a policy's actor ConfigMap (judged, then promoted or refused).
CANDIDATE_KEY = "candidate.onnx"

__all__ = [
    "ANNOTATION_COMPUTE_SHARE",
    "CANDIDATE_KEY",
    "CLOUD_MUTUAL_TLS",
    "CLOUD_REPLICA_CPU",
    "CLOUD_REPLICA_MEMORY",
    "CLOUD_TLS_SECRET",
    "COMPONENT_CLOUD_INFERENCE",
    "COMPONENT_EDGE_INFERENCE",
    "COMPONENT_PEERS",
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
