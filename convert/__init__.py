"""Conversion stage: trained checkpoints to NIR and ONNX graphs (not built yet)."""
