"""Inference: the ONNX Runtime model server (Open Inference Protocol), pipeline and gateway."""
