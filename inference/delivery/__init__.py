"""Model delivery (``edgeaigc fetch-model``): the init container that puts a verified ``model.onnx`` in place.

Modules: :mod:`.exit_codes` (the command's exit codes and the condition reason of each: the
contract the operator reads back from the pod), :mod:`.artifact` (copy or download, verify,
resume) and :mod:`.cli` (the command). See ``docs/model-delivery.md``.
"""
