"""The edge gateway (``edgeaigc gateway``): one per edge node, a local replica on a hit, the cloud on a miss.

Modules: :mod:`.routing_table` (the table the operator writes and the gateway reads: the contract
of ``docs/routing-table.md``, standard library only, so the operator and the twin import it),
:mod:`.table_watcher` (the mounted file, polled), :mod:`.balancing` (smooth weighted
round-robin), :mod:`.breaker` (circuit breaker per local endpoint), :mod:`.gateway` (routing,
failover and forwarding), :mod:`.metrics`, :mod:`.app` (the HTTP app) and :mod:`.cli` (the command).
"""
