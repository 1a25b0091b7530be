"""Serving benchmarks (``edgeaigc bench-serving``): server overhead against onnxruntime and KServe, and the
per-model work calibration the simulator's scenarios read (``docs/calibration.md``).

Modules: :mod:`.cli` (the command and its parts), :mod:`.load` (onnxruntime in-process and a
closed-loop HTTP load generator), :mod:`.models` (generated stand-in models, sessions, inputs),
:mod:`.calibration` (work per request, written as the calibration file) and :mod:`.kserve_peer`
(KServe's model server on the same model, run in a virtual environment of its own).
"""
