"""The trainer: read data with polars, fit scikit-learn, export ONNX, publish a registry version.

It runs as its own process (``driftline train``, ``driftline publish``); the server never imports it.
"""
