"""The camera pipeline: detection, classification and flow analysis of camera frames, and the camera that plays it.

Modules: :mod:`.config` (what to run and how), :mod:`.image` (frames to tensors),
:mod:`.backend` (models in-process or at a gateway), :mod:`.detect`, :mod:`.classify`,
:mod:`.track`, :mod:`.flow`, :mod:`.traffic` (the per-camera pipeline), :mod:`.scenes`
(generated traffic scenes with their ground truth: a camera without footage, and the demo
models' training data) and :mod:`.camera` (``edgeaigc camera``: a video or a generated scene
played against a gateway through the pipeline).
"""
