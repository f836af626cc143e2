"""benchmarks/gpu_check.sh, the prepared device check, run end to end in its quick mode on a machine without a GPU.

The script must say that no GPU was found, run the CUDA kernel tests in numba's simulator and the CPU side of the
benchmark (a real `driftline serve --device cpu` on 127.0.0.1 included), exit 0 and write its results file, with
no GPU figure claimed. CUDA_VISIBLE_DEVICES=-1 hides a GPU where there is one, so the test means the same anywhere.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_gpu_check_without_a_gpu_says_so_runs_the_simulator_and_exits_0(tmp_path: Path) -> None:
    env = {**os.environ, "OUT": str(tmp_path), "DRIFTLINE_GPU_CHECK_QUICK": "1", "CUDA_VISIBLE_DEVICES": "-1",
           "DRIFTLINE_GPU_CHECK_TESTS": "tests/kernels/test_words_cuda.py"}  # one small file keeps it quick
    env.pop("NUMBA_ENABLE_CUDASIM", None)
    done = subprocess.run(["bash", "benchmarks/gpu_check.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "hides every GPU" in output and "no GPU found" in output
    assert "kernel tests in numba's simulator:" in output and " passed" in output

    results = (tmp_path / "gpu_results.md").read_text()
    assert "no GPU found" in results
    assert "simulator (pytest -q tests/kernels/test_words_cuda.py):" in results and " passed" in results
    for figure in ("TreeSHAP rows/s, 1 rows per call", "TreeSHAP rows/s, 1,000 rows per call", "drift update",
                   "infer/s, batch-1, c=32", "infer/s, 64-row requests, c=32"):
        line = next(line for line in results.splitlines() if figure in line)
        gpu, cpu = (cell.strip() for cell in line.split("|")[2:4])
        assert gpu == "n/a (no GPU)", line  # no GPU figure claimed
        assert cpu and cpu[0].isdigit(), line  # a CPU baseline measured in this run
    assert (tmp_path / "gpu_check_tests.log").exists()
