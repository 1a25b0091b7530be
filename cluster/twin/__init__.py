"""The traffic twin: a namespace's edge gateways played by the system model, with the gateways' metrics.

``edgeaigc twin`` reads the fleet (EdgeNode, InferenceModel, Camera, PlacementPolicy) from the API
server, turns it into the simulator's :class:`~edgeaigc.policy.scenario.Scenario` with the
operator's own :func:`~edgeaigc.policy.fleet.scenario_from_resources`, draws a long demand trace
(:class:`~edgeaigc.policy.demand.DemandGenerator`, seeded) and then, every tick:

1. reads the placement the cluster really runs: (edge node, model) is cached when the operator's
   edge Deployment for it (labels ``edgeaigc.io/policy``, ``edgeaigc.io/model``,
   ``edgeaigc.io/edge-node``) has a ready replica; its compute share is the CPU limit of its ready
   pods (as their kubelet reports it, so in-place resizes count) over ``EdgeNode.spec.cores``
   (clipped to [0, 1], scaled down per node if the shares add up to more than 1; a container
   without a limit may use the whole node); each camera's bandwidth share comes from the routing
   table ConfigMap (``edgeaigc-<policy>-routing``), or is an equal split of its node without one;
2. serves the slot's requests under that placement with
   :func:`~edgeaigc.policy.system_model.evaluate_slot` (the previous cache is the last tick's, so
   newly cached models pay their download);
3. adds them to the metrics served at ``/metrics`` — the request metrics of
   ``docs/metrics-contract.md`` with ``edge_node`` labels and each camera's request bytes and link,
   as the real gateways export them — and registers itself as a scrape target of the local cluster's Prometheus
   (job ``edgeaigc-gateway``).

**Time mapping.** One tick (``--tick-seconds``, 5 s by default) plays one slot of the trace: the
trace's clock — hour of day, popularity drift, variant switches, link states — advances by the
scenario's slot length (the policy's ``planningSlotSeconds``, 60 s by default) per tick, so the drift is
fast-forwarded ``slot_seconds / tick_seconds`` times (12x by default) and a simulated day takes
``86400 / slot_seconds`` ticks (2 hours by default). Request *rates* are not scaled: during a tick,
requests arrive at the slot's per-second rates (Poisson counts with mean ``rate x tick_seconds``),
so ``increase(edgeaigc_requests_total[N s]) / N`` reads the simulated demand in requests per
second, the unit the policy was trained on. Response times and bytes are per request, and cost
accrues per request served plus one download charge when a model becomes newly cached, so they
need no conversion either. An operator deciding every ``intervalSeconds`` of real time thus sees
several slots of drift between two decisions.

The API server is read every tick; when it cannot be read, or the policy is gone, the twin keeps
serving the last placement it saw and logs the problem (once, and again when it recovers).

**Modules.** :mod:`.fleet_source` (reading Kubernetes: the fleet, the edge Deployments and pods,
the routing table; the API client), :mod:`.placement` (the placement rebuilt from them, pure),
:mod:`.slots` (one slot served under it, pure), :mod:`.twin` (:class:`~.twin.Twin`, the tick
loop), :mod:`.metrics` (the one exporter of the metrics), :mod:`.metrics_server` (``/metrics``
over HTTP), :mod:`.registration` (the Prometheus scrape target) and :mod:`.cli` (the command).
"""
