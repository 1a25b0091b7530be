"""The traffic pipeline: detection, classification and flow analysis of camera frames.

Modules: :mod:`.config` (what to run and how), :mod:`.image` (frames to tensors),
:mod:`.backend` (models in-process or at a gateway), :mod:`.detect`, :mod:`.classify`,
:mod:`.track`, :mod:`.flow`, and :mod:`.traffic` (the per-camera pipeline).
"""
