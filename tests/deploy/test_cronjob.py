"""The retrain CronJob's command runs as written: its args from deploy/k8s/cronjob.yaml, through the image's
entrypoint, with only the two object-store URLs swapped for local paths (a registry with a production
version, and fresh data)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

from deploy_support import ENTRYPOINT, ROOT, entrypoint_env
from helpers import driftline
from driftline.registry import Registry

CRONJOB = ROOT / "deploy" / "k8s" / "cronjob.yaml"


def cronjob_args() -> list[str]:
    spec = yaml.safe_load(CRONJOB.read_text())["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert "command" not in container  # the image's entrypoint runs the args, as in the Deployment
    return container["args"]


def swapped(args: list[str], registry: Path, data: Path) -> list[str]:
    """The args with the registry URL and the data URL replaced; everything else exactly as written."""
    out, seen = [], set()
    for arg in args:
        flag, sep, value = arg.partition("=")
        if sep and flag in ("--registry", "--data"):
            assert value.startswith("s3://"), arg
            seen.add(flag)
            arg = f"{flag}={registry if flag == '--registry' else data}"
        out.append(arg)
    assert seen == {"--registry", "--data"}, args
    return out


def test_the_cronjobs_command_retrains_publishes_and_promotes(registry: Path, tmp_path: Path):
    own = tmp_path / "registry"
    shutil.copytree(registry, own)  # the session's registry stays as the other tests expect it
    assert Registry(own).aliases("housing")["production"] == 1
    fresh = tmp_path / "latest.parquet"
    driftline("data", "housing", "--rows", "1500", "--seed", "8", "--out", str(fresh))

    args = swapped(cronjob_args(), own, fresh)
    done = subprocess.run(["sh", str(ENTRYPOINT), *args], env=entrypoint_env(), capture_output=True, text=True,
                          timeout=600, cwd=tempfile.gettempdir())
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    assert "published version 2" in done.stdout and "production -> version 2" in done.stdout
    assert Registry(own).versions("housing") == [1, 2]
    assert Registry(own).aliases("housing")["production"] == 2
    assert Registry(own).open("housing", 2).metadata.source == "driftline retrain"
