"""Demo models trained on the project's own generated traffic scenes: a vehicle detector and a type classifier.

Nothing is downloaded: :mod:`edgeaigc.inference.pipeline.scenes` renders every training and evaluation
frame from a seed. ``edgeaigc build-demo-models --output DIR`` (:mod:`.build`) renders training
data, trains a day and a night detector and one vehicle-type classifier with torch, exports them
to ONNX in the model-repository layout that ``edgeaigc serve --model-repository DIR`` serves, and
evaluates the exported models on held-out generated data (scenes of other seeds).

Modules: :mod:`.data` (scenes, seeds, training frames and crops; no torch), :mod:`.detector` and
:mod:`.classifier` (the torch networks, their losses and ONNX export), :mod:`.training` (the
shared time-capped training loop), :mod:`.evaluate` (metrics and held-out evaluation of the
ONNX models through the pipeline's own code; no torch), :mod:`.build` (the command).
Torch is needed at build time only: the built models run with onnxruntime.
"""
