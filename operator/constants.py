"""API group, label keys and names shared by every part of the operator (one place)."""

import os

GROUP = "edgeaigc.io"
VERSION = "v1alpha1"
FIELD_MANAGER = "edgeaigc-operator"

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

ANNOTATION_COMPUTE_SHARE = "edgeaigc.io/compute-share"
ROUTING_TABLE_KEY = "routing.json"

INFERENCE_PORT = 8080
DEFAULT_INFERENCE_IMAGE = os.environ.get("EDGEAIGC_INFERENCE_IMAGE", "ghcr.io/edgeaigc/inference:0.1.0")
