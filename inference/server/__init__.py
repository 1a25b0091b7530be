"""The model server (``edgeaigc serve``): ONNX Runtime models over the Open Inference Protocol (KServe v2 REST).

Modules, in the order a request meets them: :mod:`.cli` (the command), :mod:`.routes` (the HTTP
app and its routes), :mod:`.dataplane` (protocol-independent operations), :mod:`.repository`
(the models of a directory, loading, memory budget), :mod:`.model` (one ONNX model, dynamic
batching) and :mod:`.metrics`. The protocol (:mod:`edgeaigc.inference.protocol`) and the errors
(:mod:`edgeaigc.inference.errors`) are shared with the gateway and the pipeline's remote client.
"""
