"""Inference: what runs on the edge nodes and in the cloud, one sub-package per product.

:mod:`.server` (the model server), :mod:`.gateway` (the edge gateway), :mod:`.delivery` (the
init container that fetches a model), :mod:`.pipeline` (the camera pipeline and camera),
:mod:`.demo_models` (the demo models' builders) and :mod:`.bench` (serving benchmarks). What
several of them speak stays here: :mod:`.protocol` (Open Inference Protocol bodies),
:mod:`.errors` (errors and their HTTP status), :mod:`.http_server` (uvicorn as every server runs
it) and :mod:`.metrics_contract` (the names of the metrics of ``docs/metrics-contract.md``).
"""
