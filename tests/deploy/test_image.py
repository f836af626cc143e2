"""The image, without Docker: the Dockerfile runs deploy/docker/install.sh and entrypoint.sh, and these tests
run the same two files: the wheel the install step builds, the environment it installs that wheel into,
and a server the entrypoint starts from that environment with DRIFTLINE_* variables.

The wheel is built offline (this environment's setuptools). The runtime step is run with pip's PIP_NO_DEPS
(the third-party packages come from this checkout's environment, through PYTHONPATH), so it installs only
driftline's wheel, and pip itself, which the step upgrades from the package index as the image build does.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
import zipfile
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from dockerfile import parse_file

from deploy_support import ENTRYPOINT, INSTALL, ROOT, entrypoint_env, free_port, run_entrypoint
from helpers import wait_until

DOCKERFILE = ROOT / "Dockerfile"


def stages() -> dict[str, list]:
    """The Dockerfile's instructions by stage name."""
    by_stage: dict[str, list] = {}
    current = None
    for command in parse_file(str(DOCKERFILE)):
        if command.cmd == "FROM":
            current = command.value[-1] if "AS" in [v.upper() for v in command.value] else command.value[0]
            by_stage[current] = [command]
        elif current is not None:
            by_stage[current].append(command)
    return by_stage


def runs(stage: list) -> list[str]:
    return [" ".join(c.value) for c in stage if c.cmd == "RUN"]


def test_the_dockerfile_installs_and_starts_with_the_scripts_the_tests_run():
    by_stage = stages()
    assert {"builder", "base-cpu", "base-cuda", "runtime"} <= set(by_stage)
    assert runs(by_stage["builder"]) == ["sh deploy/docker/install.sh wheel /src /dist"]
    runtime = by_stage["runtime"]
    assert runtime[0].value[0] == "base-${DEVICE}"  # one runtime stage, its base chosen by --build-arg DEVICE
    install = next(c for c in runtime if c.cmd == "RUN" and "install.sh" in c.value[0])
    assert "--mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh" in install.flags
    assert "--mount=type=bind,from=builder,source=/dist,target=/tmp/dist" in install.flags
    assert install.value[0] == "sh /tmp/install.sh runtime /tmp/dist /opt/driftline ${DEVICE}"
    copied = {c.value[-1]: c.value[0] for c in runtime if c.cmd == "COPY"}
    entrypoint = next(c for c in runtime if c.cmd == "ENTRYPOINT")
    assert entrypoint.json and len(entrypoint.value) == 1
    assert copied[entrypoint.value[0]] == "deploy/docker/entrypoint.sh"
    env = " ".join(" ".join(c.value) for c in runtime if c.cmd == "ENV")
    assert "PATH /opt/driftline/bin:$PATH" in env  # where the install step puts `driftline`
    users = [c.value[0] for c in runtime if c.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root")
    device_arg = next(c for c in parse_file(str(DOCKERFILE)) if c.cmd == "ARG" and c.value[0].startswith("DEVICE"))
    assert device_arg.value[0] == "DEVICE=cpu"
    cuda_from = by_stage["base-cuda"][0].value[0]
    assert cuda_from == "${CUDA_IMAGE}"


def test_the_image_builds_the_compiled_door_on_the_runtimes_base():
    by_stage = stages()
    door = by_stage["door"]
    # The extension is tied to its Python (cpython-311 on the CPU base, Ubuntu's 3.12 on the CUDA one) and to its
    # distribution's library names: built on the very base the runtime runs on, for either DEVICE.
    assert door[0].value[0] == "base-${DEVICE}"
    copied = {c.value[-1]: c.value[0] for c in door if c.cmd == "COPY"}
    assert copied == {"proto": "proto", "server/compiled": "server/compiled"}  # what build.py reads
    (build,) = [c for c in door if c.cmd == "RUN"]
    assert build.value[0] == "sh /tmp/install.sh door /src /door"
    assert "--mount=type=bind,source=deploy/docker/install.sh,target=/tmp/install.sh" in build.flags
    runtime = by_stage["runtime"]
    steps = [c for c in runtime if c.cmd == "RUN" and "install.sh" in c.value[0]]
    assert [s.value[0] for s in steps] == ["sh /tmp/install.sh runtime /tmp/dist /opt/driftline ${DEVICE}",
                                           "sh /tmp/install.sh door-runtime /tmp/door /opt/driftline"]
    assert "--mount=type=bind,from=door,source=/door,target=/tmp/door" in steps[1].flags
    # The build uses build.py --strict: a door that does not build fails the image instead of leaving it out.
    script = INSTALL.read_text()
    assert '"$src/server/compiled/build.py" --strict' in script
    build_py = (ROOT / "server" / "compiled" / "build.py").read_text()
    listed = re.search(r"APT_PACKAGES = \(([^)]*)\)", build_py).group(1)
    wanted = set(re.findall(r'"([^"]+)"', listed))
    installed = set(re.search(r'^DOOR_BUILD_PACKAGES="([^"]*)"', script, re.M).group(1).split())
    assert wanted <= installed, f"install.sh's door build lacks {wanted - installed} (server/compiled/build.py)"


def test_the_cuda_variant_installs_the_gpu_packages():
    script = INSTALL.read_text()
    cuda_branch = script[script.index("cuda)"):script.index(";;", script.index("cuda)"))]
    assert "numba-cuda[cu13]" in cuda_branch and "cupy-cuda13x" in cuda_branch
    # onnxruntime-gpu comes with the wheel itself on Linux x86_64
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("onnxruntime-gpu") and "x86_64" in d for d in dependencies)


def build_context(target: Path) -> Path:
    """What `docker build .` sends: the checkout less what .dockerignore leaves out."""
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]

    def ignored(relative: str) -> bool:
        return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(relative, p.removeprefix("**/"))
                   or fnmatch.fnmatch(Path(relative).name, p.removeprefix("**/")) for p in patterns)

    def skip(folder: str, names: list[str]) -> set[str]:
        base = Path(folder).relative_to(ROOT)
        return {n for n in names if ignored(str(base / n) if str(base) != "." else n)}

    shutil.copytree(ROOT, target, ignore=skip, symlinks=True)
    return target


def offline_pip(**more: str) -> dict[str, str]:
    # PIP_NO_BUILD_ISOLATION=0 turns isolation off (pip reads the variable inverted): the build uses this
    # environment's setuptools instead of downloading one.
    return {**os.environ, "PYTHON": sys.executable, "PIP_NO_BUILD_ISOLATION": "0", "PIP_NO_INDEX": "1", **more}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("image")
    context = build_context(work / "src")
    assert not (context / ".venv").exists() and not (context / "tests").exists()
    subprocess.run(["sh", str(INSTALL), "wheel", str(context), str(work / "dist")], env=offline_pip(),
                   check=True, capture_output=True, text=True, timeout=600)
    (built,) = (work / "dist").glob("driftline-*.whl")
    return built


def test_the_wheel_holds_every_package_and_module(wheel: Path):
    assert "driftline/server/compiled/__init__.py" in zipfile.ZipFile(wheel).namelist()  # where the door goes
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, folder in setuptools["package-dir"].items():
        assert package in setuptools["packages"]
        inside = package.replace(".", "/")
        for module in (ROOT / folder).glob("*.py"):
            assert f"{inside}/{module.name}" in names, f"{module} is missing from the wheel"
    assert {n for n in names if n.endswith(".proto")}, "the .proto sources belong in the wheel"
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert re.search(r"^driftline = driftline\.cli\.main:main$", entry_points, re.M)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The runtime step's environment (driftline's wheel only: PIP_NO_DEPS)."""
    prefix = tmp_path_factory.mktemp("opt") / "driftline"
    done = subprocess.run(["sh", str(INSTALL), "runtime", str(wheel.parent), str(prefix), "cpu"],
                          env={**os.environ, "PYTHON": sys.executable, "PIP_NO_DEPS": "1"},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"install.sh runtime failed (it fetches pip from the package index):\n{done.stderr}"
    return prefix


def image_env(prefix: Path, **variables: str) -> dict[str, str]:
    """The image's environment: the installed `driftline` first on PATH; third-party packages from this checkout's
    environment (PYTHONPATH comes before site-packages, so `driftline` itself is the installed wheel's)."""
    env = entrypoint_env(**variables)
    env["PATH"] = f"{prefix / 'bin'}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = sysconfig.get_paths()["purelib"]
    return env


def test_the_runtime_step_puts_driftline_where_the_entrypoint_finds_it(installed: Path, tmp_path: Path):
    env = image_env(installed)
    assert shutil.which("driftline", path=env["PATH"]) == str(installed / "bin" / "driftline")
    where = subprocess.run([str(installed / "bin" / "python"), "-c", "import driftline; print(driftline.__file__)"],
                           env=env, capture_output=True, text=True, check=True, cwd=tmp_path).stdout.strip()
    assert Path(where).is_relative_to(installed), where  # the wheel's copy, not this checkout's
    # A first argument that is a word runs that command (the retrain CronJob's way).
    listed = subprocess.run(["sh", str(ENTRYPOINT), "models", "list", "--registry", str(tmp_path)], env=env,
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr


def test_the_entrypoint_serves_from_environment_variables_and_flags_win(installed: Path, registry: Path):
    grpc_port, http_port, metrics_port, flag_port = free_port(), free_port(), free_port(), free_port()
    env = image_env(installed, DRIFTLINE_REGISTRY=str(registry), DRIFTLINE_GRPC_PORT=str(grpc_port),
                    DRIFTLINE_HTTP_PORT=str(http_port), DRIFTLINE_METRICS_PORT=str(metrics_port),
                    DRIFTLINE_WORKERS="1")
    # No DRIFTLINE_HOST: the entrypoint listens on every address, as a container must.
    with run_entrypoint(env=env) as server:
        assert " on 0.0.0.0:" in "".join(server.log) and server.port == grpc_port
        with grpcclient.InferenceServerClient(url=f"127.0.0.1:{grpc_port}") as client:
            assert client.get_model_metadata("housing").versions == ["1"]
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=10) as answer:
            assert answer.status == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as answer:
            assert b"driftline_model_served_version" in answer.read()
    with run_entrypoint(f"--grpc-port={flag_port}", env=env) as server:
        assert server.port == flag_port  # the flag, not DRIFTLINE_GRPC_PORT
        with grpc.insecure_channel(f"127.0.0.1:{flag_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=30)


BUILT_DOOR = sorted((ROOT / "server" / "compiled").glob("_door*.so"))
needs_door = pytest.mark.skipif(not BUILT_DOOR or shutil.which("dpkg-query") is None,
                                reason="the compiled gRPC front end is not built here (make setup), or no dpkg")


def owner(library: str) -> str:
    """The Debian package that ships a shared library (by its soname's path, usrmerge either way)."""
    path = Path(library)
    moved = Path(library.removeprefix("/usr")) if library.startswith("/usr/") else Path("/usr" + library)
    for candidate in (path, moved, path.resolve()):
        found = subprocess.run(["dpkg", "-S", str(candidate)], capture_output=True, text=True)
        if found.returncode == 0:
            return found.stdout.split(":")[0]
    raise AssertionError(f"no package ships {library}")


@needs_door
def test_the_door_runtime_packages_are_those_of_the_libraries_it_links():
    listed = subprocess.run(["sh", str(INSTALL), "door-packages", str(BUILT_DOOR[0])], capture_output=True,
                            text=True, check=True).stdout.split()
    loaded = re.findall(r"=> (/\S+)", subprocess.run(["ldd", str(BUILT_DOOR[0])], capture_output=True, text=True,
                                                      check=True).stdout)
    assert set(listed) == {owner(lib) for lib in loaded}
    grpc_cpp = next(lib for lib in loaded if "libgrpc++.so" in lib)
    protobuf = next(lib for lib in loaded if "/libprotobuf.so" in lib)
    assert {owner(grpc_cpp), owner(protobuf)} <= set(listed)  # Debian 12: libgrpc++1.51, libprotobuf32


@needs_door
def test_the_image_serves_through_the_compiled_door(installed: Path, registry: Path, tmp_path: Path):
    """The Dockerfile's door-runtime step on this machine (every library present: no apt), then the entrypoint
    serving through the extension it placed in the environment."""
    door = tmp_path / "door"
    door.mkdir()
    shutil.copy2(BUILT_DOOR[0], door)
    packages = subprocess.run(["sh", str(INSTALL), "door-packages", str(BUILT_DOOR[0])], capture_output=True,
                              text=True, check=True).stdout
    (door / "runtime-packages").write_text(packages)
    env = image_env(installed)
    done = subprocess.run(["sh", str(INSTALL), "door-runtime", str(door), str(installed)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    placed = list(installed.glob("lib/python*/site-packages/driftline/server/compiled/_door*.so"))
    assert [p.name for p in placed] == [BUILT_DOOR[0].name]
    port = free_port()
    env = image_env(installed, DRIFTLINE_REGISTRY=str(registry), DRIFTLINE_GRPC_PORT=str(port),
                    DRIFTLINE_HTTP_PORT=str(free_port()), DRIFTLINE_METRICS_PORT=str(free_port()),
                    DRIFTLINE_WORKERS="1")
    with run_entrypoint("--front-end", "compiled", env=env) as server:
        assert "compiled gRPC front end" in "".join(server.log)
        with grpcclient.InferenceServerClient(url=f"127.0.0.1:{port}") as client:
            rows = np.array([[120.0, 400.0, 3, 2, 1, 20.0, 1, 1990, 3, 5.0, 1.0]], dtype=np.float32)
            request = grpcclient.InferInput("input", list(rows.shape), "FP32")
            request.set_data_from_numpy(rows)
            answer = client.infer("housing", [request])
            assert answer.as_numpy("prediction").shape == (1, 1)
    # On stop the door says what it did: the call was batched in C++, not forwarded to the Python door.
    wait_until(lambda: "1 calls batched in C++" in "".join(server.log), "the door's count of batched calls",
               limit_s=30)
