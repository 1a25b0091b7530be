"""The names, labels and buckets of ``docs/metrics-contract.md``: one place for every exporter and reader.

The model server (:mod:`edgeaigc.inference.server.metrics`), the edge gateway
(:mod:`edgeaigc.inference.gateway.metrics`) and the traffic twin (:mod:`edgeaigc.cluster.twin`)
export these families; the operator's observer and the demo query them. Standard library only:
the operator imports it without the Prometheus client or the serving stack.

Names are the ones Prometheus stores (counters end in ``_total``); the Python client wants a
counter's name without that suffix, which :attr:`Family.client_name` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Label value for requests naming a model the component does not know (bounds cardinality).
UNKNOWN_MODEL = "_unknown"
#: Values of the ``served_by`` label.
SERVED_BY_VALUES = ("edge", "cloud")

#: Seconds; from 1 ms (a tiny model on a fast core) to 10 s (a detector on a loaded Pi over a bad link).
REQUEST_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS_TOTAL = "edgeaigc_requests_total"
REQUEST_DURATION_SECONDS = "edgeaigc_request_duration_seconds"
REQUEST_BYTES_TOTAL = "edgeaigc_request_bytes_total"
RESPONSE_BYTES_TOTAL = "edgeaigc_response_bytes_total"
REQUESTS_IN_FLIGHT = "edgeaigc_requests_in_flight"
CAMERA_LINK_SPECTRAL_EFFICIENCY = "edgeaigc_camera_link_spectral_efficiency"
CAMERA_REQUEST_BYTES_TOTAL = "edgeaigc_camera_request_bytes_total"
REQUEST_SECONDS_TOTAL = "edgeaigc_request_seconds_total"

#: Names exported by every component that serves inference requests (server, gateway, twin).
REQUEST_METRIC_NAMES = (
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    REQUEST_BYTES_TOTAL,
    RESPONSE_BYTES_TOTAL,
    REQUESTS_IN_FLIGHT,
)


@dataclass(frozen=True)
class Family:
    """One metric family of the contract as a gateway (and the twin playing one) exports it."""

    name: str
    """As Prometheus stores it (a counter's ends in ``_total``)."""
    kind: str
    """``counter``, ``gauge`` or ``histogram``."""
    labels: tuple[str, ...]
    help: str

    @property
    def client_name(self) -> str:
        """The name to give ``prometheus_client`` (it appends ``_total`` to a counter's)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


# A gateway's series grow with its node's models plus its cameras, never with cameras x models: the
# decision needs each (node, model)'s requests and each camera's upload, not each (camera, model)'s
# (docs/metrics-contract.md, "Series per gateway").

#: The request metrics with the gateway's ``edge_node`` label (no ``camera``: see :data:`CAMERA_REQUEST_BYTES`).
GATEWAY_REQUESTS = Family(
    REQUESTS_TOTAL,
    "counter",
    ("model", "code", "served_by", "edge_node"),
    "Inference requests answered, by model, HTTP status code, where they were served and edge node.",
)
#: Per node and place only: the decision reads the mean, and per-model latencies are the model servers'.
GATEWAY_REQUEST_DURATION = Family(
    REQUEST_DURATION_SECONDS,
    "histogram",
    ("served_by", "edge_node"),
    "Time from receiving an inference request to sending the last byte of its response.",
)
#: Each model's response times summed: over ``edgeaigc_requests_total`` its mean (2 series a pair, a histogram's 32).
GATEWAY_REQUEST_SECONDS = Family(
    REQUEST_SECONDS_TOTAL,
    "counter",
    ("model", "served_by", "edge_node"),
    "Seconds from receiving inference requests to sending the last byte of their responses, summed.",
)
#: Per node and place too: the decision reads the bytes relayed to the cloud (each camera's are its own family).
GATEWAY_REQUEST_BYTES = Family(
    REQUEST_BYTES_TOTAL, "counter", ("served_by", "edge_node"), "Bytes of inference request bodies received."
)
GATEWAY_RESPONSE_BYTES = Family(
    RESPONSE_BYTES_TOTAL, "counter", ("served_by", "edge_node"), "Bytes of inference response bodies sent."
)
GATEWAY_IN_FLIGHT_LABELS = ("served_by", "edge_node")
CAMERA_LINK = Family(
    CAMERA_LINK_SPECTRAL_EFFICIENCY,
    "gauge",
    ("edge_node", "camera"),
    "Spectral efficiency of a camera's uplink in its last slot, bit/s/Hz.",
)

#: Recorded by ``charts/edgeaigc/files/prometheus-rules.yaml``: the gateways' request counters without ``code``.
RECORDED_REQUESTS_TOTAL = "edgeaigc:requests_total:sum_without_code"

#: What each camera uploads: with the (node, model) request counts, all the per-camera demand the policy reads.
CAMERA_REQUEST_BYTES = Family(
    CAMERA_REQUEST_BYTES_TOTAL,
    "counter",
    ("edge_node", "camera"),
    "Bytes of inference request bodies received from each camera.",
)

#: The request metrics of the contract as the gateway (and the traffic twin) label them.
GATEWAY_REQUEST_METRIC_LABELS = {
    **{
        family.name: family.labels
        for family in (
            GATEWAY_REQUESTS,
            GATEWAY_REQUEST_DURATION,
            GATEWAY_REQUEST_SECONDS,
            GATEWAY_REQUEST_BYTES,
            GATEWAY_RESPONSE_BYTES,
            CAMERA_REQUEST_BYTES,
        )
    },
    REQUESTS_IN_FLIGHT: GATEWAY_IN_FLIGHT_LABELS,
}
