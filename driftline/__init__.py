"""driftline: an inference server for tabular models that watches its own data.

The package is assembled from the repository's top-level folders (see pyproject.toml):
``driftline.proto`` (proto/), ``driftline.registry`` (registry/), ``driftline.trainer`` (trainer/),
``driftline.server`` (server/), ``driftline.kernels`` (kernels/) and ``driftline.cli`` (cli/).
"""

__version__ = "0.1.0"
