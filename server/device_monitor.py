"""Drift and sampled attributions of a batch that is still on the device (the device path, server/device_batch.py).

The CUDA twins of the kernels (kernels/drift_cuda.py, kernels/treeshap_cuda.py) read the batch's arrays where
onnxruntime left them; what comes back to the host is a batch's drift state (columns x bins) and the attributions
of the few sampled rows. :class:`~driftline.server.monitor.VersionMonitor` merges the state exactly as it would
have folded in the rows.

numba.cuda is imported here only, at a version's first batch monitored on the device, on the monitor thread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from driftline.attribution import Explainer, TreeExplainer
from driftline.kernels.drift import BinLayout, DriftState
from driftline.kernels.launch import device_view
from driftline.server.arrays import to_host


def monitored_columns(xp: ModuleType, X: Any, outputs: Mapping[str, Any], order: Sequence[str]) -> Any:
    """:func:`driftline.registry.columns.monitored_rows` for ``xp`` arrays: [rows, columns] float64, the features,
    then each output of ``order`` flattened per row; computed where the arrays are."""
    parts = [X.astype(xp.float64, copy=False)]
    for name in order:
        value = outputs[name]
        parts.append(value.reshape(len(value), -1).astype(xp.float64, copy=False))
    return xp.concatenate(parts, axis=1)


class Indexed:
    """Device rows as the sampler reads them: by host row numbers (CuPy wants its index arrays on the device)."""

    def __init__(self, rows: Any, xp: ModuleType) -> None:
        self.rows, self.xp = rows, xp

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, picked: np.ndarray) -> Any:
        return self.rows[self.xp.asarray(picked)]


class DeviceMonitoring:
    """One version's device copies of what its monitoring kernels read: the bin layout and the TreeSHAP paths."""

    def __init__(self, layout: BinLayout, explainer: Explainer | None) -> None:
        from driftline.kernels import drift_cuda, treeshap_cuda

        self._drift, self._treeshap = drift_cuda, treeshap_cuda
        self._layout = drift_cuda.layout_to_device(layout)
        self._host = explainer
        # Only exact TreeSHAP has a device twin; linear attributions are a product of two small arrays anyway.
        self._paths = None
        if isinstance(explainer, TreeExplainer):
            try:
                self._paths = treeshap_cuda.prepare_cuda(explainer.model)
            except ValueError:  # paths on more distinct features than the kernel's scratch holds: the host's
                self._paths = None

    def batch_state(self, empty: DriftState, columns: Any) -> DriftState:
        """``empty`` (a state of the version's profile) filled with the batch's ``columns`` on the device."""
        return self._drift.update_from_device(empty, device_view(columns), *self._layout)

    def explain(self, X: Any, n_threads: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The explainer's contract for rows on the device: phi and base on the host (only sampled rows come)."""
        if self._paths is None:
            return self._host.explain(to_host(X), n_threads)
        rows = X.astype(np.float32, copy=False) if X.dtype != np.float32 else X
        phi, base = self._treeshap.shap_values_cuda(self._paths, device_view(rows))
        return phi.copy_to_host(), base
