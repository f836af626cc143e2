"""Training from Parquet partitions read in pieces: the streamed baseline equals the in-memory one on the same
rows, it runs under a memory limit the whole table does not fit in, and the lineage says what was sampled."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnxruntime as ort
import polars as pl
import pytest

from driftline.errors import InvalidInput, NotFound
from driftline.kernels.drift import state_of
from driftline.registry import open_registry
from driftline.registry.columns import ATTRIBUTION_SHARE, monitored_rows
from driftline.registry.profile import Profile, counting_layout, recounted
from driftline.trainer.data import ColumnHasher, data_version, read_table
from driftline.trainer.partitions import fit_sample, open_partitions
from driftline.trainer.stream_profile import streamed_baseline
from driftline.trainer.train import TrainConfig, train
from helpers import driftline, published_version
from moto_s3 import moto_s3

FAST = {"n_estimators": 20}
FEATURES = [f"x{i}" for i in range(6)] + ["rooms"]


def write_partitions(folder: Path, rows: int, parts: int, seed: int = 0) -> list[Path]:
    """``parts`` Parquet files of a regression table: six normal features, a discrete one, a target."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    per = rows // parts
    paths = []
    for p in range(parts):
        X = rng.standard_normal((per, 6)) * (1 + p)  # later partitions spread wider: the sample must not hide it
        rooms = rng.integers(1, 5, per)
        price = 1000 + X @ np.arange(1, 7) + 10 * rooms + rng.standard_normal(per)
        frame = pl.DataFrame({f"x{i}": X[:, i] for i in range(6)}).with_columns(
            pl.Series("rooms", rooms), pl.Series("price", price))
        paths.append(folder / f"part-{p:03d}.parquet")
        frame.write_parquet(paths[-1], row_group_size=50_000)
    return paths


def in_memory_profile(trained, frame: pl.DataFrame) -> Profile:
    """All of ``frame`` profiled at once (one ONNX run, one kernel call) into the streamed profile's bins."""
    metadata = trained.metadata
    X = frame.select(FEATURES).cast(pl.Float64).to_numpy().astype(np.float32)
    session = ort.InferenceSession(trained.onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in metadata.outputs]
    outputs = dict(zip(names, session.run(names, {metadata.inputs[0].name: X}), strict=True))
    matrix = monitored_rows(X, outputs, names)
    return recounted(trained.profile, state_of(matrix, counting_layout(trained.profile, matrix.shape[1])), len(X))


def assert_same_profile(got: Profile, expected: Profile) -> None:
    """Counts, edges and extremes exactly; mean and variance to float tolerance (pieces merged in another order
    round differently)."""
    assert (got.rows, got.names, got.quantile_levels) == (expected.rows, expected.names, expected.quantile_levels)
    for g, e in zip(got.columns, expected.columns, strict=True):
        assert (g.counts, g.count, g.missing, g.finite, g.edges, g.quantiles, g.discrete) == \
            (e.counts, e.count, e.missing, e.finite, e.edges, e.quantiles, e.discrete), g.name
        assert (g.min, g.max) == (e.min, e.max), g.name
        np.testing.assert_allclose([g.mean, g.variance], [e.mean, e.variance], rtol=1e-9, err_msg=g.name)


def test_streamed_profile_equals_the_in_memory_profile_of_the_same_rows(tmp_path: Path) -> None:
    paths = write_partitions(tmp_path / "data", rows=12_000, parts=4)
    parts = open_partitions(str(tmp_path / "data" / "part-*.parquet"), chunk_rows=1_000)  # 12 pieces
    config = TrainConfig(model="m", data=parts.pattern, target="price", max_fit_rows=5_000, params=FAST)
    trained = train(config)
    whole = pl.concat([pl.read_parquet(p) for p in paths])

    expected = in_memory_profile(trained, whole)
    got = trained.profile
    assert got.rows == 12_000 and "prediction" in got.names
    assert_same_profile(got, expected)

    # Independently of the kernel: every row counted into the sample's bins, exact extremes and moments.
    for name in FEATURES:
        values = whole[name].cast(pl.Float64).to_numpy().astype(np.float32).astype(np.float64)
        column = got.column(name)
        bins = np.bincount(np.searchsorted(column.edges, values, side="right"), minlength=len(column.edges) + 1)
        assert column.counts == tuple(bins.tolist()), name
        assert (column.min, column.max) == (values.min(), values.max())
        np.testing.assert_allclose([column.mean, column.variance], [values.mean(), values.var()], rtol=1e-9)
    assert got.column("x0").max > 3.5  # the widest partition's tail, beyond the first partitions' range
    assert got.column("rooms").discrete

    # Attribution shares are explained on a sample of the fit rows; every other row is missing there.
    share = got.column(f"{ATTRIBUTION_SHARE}[x0]")
    assert 0 < share.count <= 2000 and share.count + share.missing == 12_000

    fit = trained.metadata.extra["fit_sample"]
    assert fit == {"rows": 5_000, "of": 12_000, "seed": 0, "max_rows": 5_000, "partitions": 4,
                   "baseline_rows": 12_000, "baseline_dropped_rows": 0}
    assert trained.metadata.data_rows == 12_000
    assert trained.metadata.data_version == data_version(whole.select([*FEATURES, "price"]))
    assert train(config).profile == got  # the sample is drawn with the seed: the same run, the same baseline

    # In twelve pieces of a thousand rows, merged: the same baseline.
    pieces = streamed_baseline(trained.onnx_model, got, trained.metadata, parts, FEATURES, trained.schema)
    assert pieces.rows == 12_000
    assert_same_profile(pieces.profile, got)


def test_the_fit_sample_is_seeded_and_covers_every_partition(tmp_path: Path) -> None:
    write_partitions(tmp_path / "data", rows=8_000, parts=4)
    parts = open_partitions(str(tmp_path / "data" / "*.parquet"), chunk_rows=700)
    one = fit_sample(parts, ["x0", "price"], 1_000, seed=3)
    assert one.equals(fit_sample(parts, ["x0", "price"], 1_000, seed=3))
    assert not one.equals(fit_sample(parts, ["x0", "price"], 1_000, seed=4))
    whole = parts.scan().with_row_index("row").collect()
    rows = whole.join(one, on=["x0", "price"], how="semi")["row"].to_numpy()
    assert len(rows) == 1_000 and len(np.unique(rows // 2_000)) == 4  # from all four files, in table order
    assert np.all(np.diff(rows) > 0)
    assert fit_sample(parts, ["x0"], 10_000, seed=0).height == 8_000  # a small table is used whole


def test_a_column_hashed_in_pieces_hashes_as_the_whole_column() -> None:
    frame = pl.DataFrame({"n": [1, 2, None, 4, 5], "b": [True, None, False, True, True],
                          "s": ["x", None, "z", "w", "v"], "f": [1.0, 2.0, 3.0, 4.0, 5.0]})
    for cut in range(6):
        hasher = ColumnHasher(frame.height)
        for name in frame.columns:
            hasher.start(name, frame[name].dtype, has_nulls=frame[name].null_count() > 0)
            hasher.add(frame[name][:cut])
            hasher.add(frame[name][cut:])
        assert hasher.hexdigest() == data_version(frame)


def test_a_single_file_trains_as_before(tmp_path: Path) -> None:
    """A plain path (no glob, no URL) is read whole: no sample, and the profile covers the fit rows only."""
    paths = write_partitions(tmp_path / "data", rows=3_000, parts=1)
    trained = train(TrainConfig(model="m", data=str(paths[0]), target="price", max_fit_rows=100, params=FAST))
    assert "fit_sample" not in trained.metadata.extra
    assert trained.metadata.data_rows == 3_000 and trained.profile.rows == 2_400  # the holdout is not profiled
    assert trained.metadata.data_version == data_version(read_table(paths[0]).select([*FEATURES, "price"]))


def test_categorical_partitions_are_refused_with_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    for p in range(2):
        pl.DataFrame({"district": ["a", "b", "c"] * 100, "area": np.arange(300.0),
                      "price": np.arange(300.0) * 3}).write_parquet(folder / f"part-{p}.parquet")
    with pytest.raises(InvalidInput, match="combine the partitions into one Parquet file"):
        train(TrainConfig(model="m", data=str(folder / "part-*.parquet"), target="price", params=FAST))


def test_a_pattern_matching_nothing_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="no files match"):
        train(TrainConfig(model="m", data=str(tmp_path / "none-*.parquet"), target="price"))
    (tmp_path / "a.csv").write_text("x,price\n1,2\n")
    with pytest.raises(InvalidInput, match="not Parquet"):
        train(TrainConfig(model="m", data=str(tmp_path / "*.csv"), target="price"))


def test_train_on_a_glob_records_the_sample_in_the_lineage(tmp_path: Path) -> None:
    write_partitions(tmp_path / "data", rows=6_000, parts=3)
    registry = tmp_path / "registry"
    result = driftline("train", "big", "--registry", str(registry), "--data", str(tmp_path / "data" / "part-*.parquet"),
                       "--target", "price", "--max-fit-rows", "2000", "--seed", "7", "--param", "n_estimators=20")
    assert "fit sample: 2,000 of 6,000 rows (seed 7); baseline profile over 6,000 rows in 3 partitions" in result.stdout
    stored = open_registry(str(registry)).open("big", published_version(result))
    assert stored.metadata.data_rows == 6_000
    assert stored.metadata.extra["fit_sample"]["rows"] == 2_000 and stored.metadata.extra["fit_sample"]["seed"] == 7
    assert stored.metadata.extra["data"] == str(tmp_path / "data" / "part-*.parquet")
    assert Profile.from_json(stored.read("profile.json")).rows == 6_000


def test_an_fsspec_memory_glob_trains_like_the_same_files_on_disk(tmp_path: Path) -> None:
    import fsspec

    paths = write_partitions(tmp_path / "data", rows=4_000, parts=2)
    fs = fsspec.filesystem("memory")
    for path in paths:
        fs.pipe(f"/driftline-test-big/{path.name}", path.read_bytes())
    try:
        config = TrainConfig(model="m", target="price", max_fit_rows=1_500, params=FAST,
                             data="memory://driftline-test-big/part-*.parquet")
        from_memory = train(config)
        from_disk = train(TrainConfig(**{**config.__dict__, "data": str(tmp_path / "data" / "part-*.parquet")}))
    finally:
        fs.rm("/driftline-test-big", recursive=True)
    assert from_memory.metadata.extra["fit_sample"]["partitions"] == 2
    assert_same_profile(from_memory.profile, from_disk.profile)
    assert from_memory.metadata.data_version == from_disk.metadata.data_version


def test_rows_beyond_the_sample_are_checked_against_its_schema(tmp_path: Path) -> None:
    paths = write_partitions(tmp_path / "data", rows=6_000, parts=3)
    for p, path in enumerate(paths):  # a row number column, not a feature, to find rows the sample left out
        frame = pl.read_parquet(path)
        frame.with_columns(pl.Series("row", np.arange(p * 2_000, (p + 1) * 2_000))).write_parquet(path)
    pattern = str(tmp_path / "data" / "*.parquet")
    sampled = set(fit_sample(open_partitions(pattern), ["row"], 1_000, seed=0)["row"].to_list())
    bad = [r for r in range(4_000, 6_000) if r not in sampled][:3]
    frame = pl.read_parquet(paths[2])
    x0 = frame["x0"].to_numpy().copy()
    x0[np.asarray(bad) - 4_000] = np.nan
    frame.with_columns(pl.Series("x0", x0)).write_parquet(paths[2])

    config = TrainConfig(model="m", data=pattern, target="price", features=tuple(FEATURES), max_fit_rows=1_000,
                         params=FAST)
    with pytest.raises(InvalidInput, match=r"(?s)x0: missing x3 \(reject\).*--drop-invalid"):
        train(config)
    trained = train(TrainConfig(**{**config.__dict__, "drop_invalid": True}))
    assert trained.metadata.extra["fit_sample"]["baseline_dropped_rows"] == 3
    assert trained.profile.rows == 5_997 and trained.profile.column("x0").missing == 0
    assert trained.metadata.data_rows == 6_000  # the data version hashes every row as read


# --------------------------------------------------------------------------- S3 (moto's server on 127.0.0.1)


@pytest.fixture()
def s3_bucket():
    with moto_s3("tables"):
        yield "tables"


def test_an_s3_glob_is_read_by_polars_and_trains_like_the_files_on_disk(tmp_path: Path, s3_bucket: str) -> None:
    import fsspec

    paths = write_partitions(tmp_path / "data", rows=4_000, parts=2)
    fs = fsspec.filesystem("s3")
    for path in paths:
        fs.put(str(path), f"{s3_bucket}/sales/{path.name}")
    config = TrainConfig(model="m", target="price", max_fit_rows=1_500, params=FAST,
                         data=f"s3://{s3_bucket}/sales/part-*.parquet")
    from_s3 = train(config)
    from_disk = train(TrainConfig(**{**config.__dict__, "data": str(tmp_path / "data" / "part-*.parquet")}))
    assert from_s3.metadata.extra["fit_sample"]["partitions"] == 2
    assert_same_profile(from_s3.profile, from_disk.profile)
    assert from_s3.metadata.data_version == from_disk.metadata.data_version


# --------------------------------------------------------------------------- bounded memory

# The child measures the highest VmData (private writable memory: what RLIMIT_DATA limits) as it runs.
CHILD = textwrap.dedent("""
    import json, resource, sys, threading, time
    limit = int(sys.argv[3])
    if limit:
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    peak = [0]
    def vm_data():
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmData:"))
    def watch():
        while True:
            peak[0] = max(peak[0], vm_data())
            time.sleep(0.001)
    threading.Thread(target=watch, daemon=True).start()
    import polars as pl
    from driftline.trainer.train import TrainConfig, train
    if sys.argv[1] == "stream":
        trained = train(TrainConfig(model="m", data=sys.argv[2], target="price", max_fit_rows=20_000,
                                    params={"n_estimators": 20}))
        rows = trained.profile.rows
    else:  # what any in-memory profile starts with: the whole table
        rows = len(pl.read_parquet(sys.argv[2]).to_numpy())
    print(json.dumps({"rows": rows, "peak_vm_data": max(peak[0], vm_data())}))
""")


def run_child(mode: str, pattern: str, limit: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, mode, pattern, str(limit)], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmData from /proc (Linux)")
def test_partitions_larger_than_the_memory_limit_are_profiled(tmp_path: Path) -> None:
    """The limit: what profiling a small table needs (libraries, threads, one piece, the fit sample) plus
    HEADROOM. The big table is larger than the headroom; loading it whole under the same limit fails."""
    headroom = 256 * 2**20
    write_partitions(tmp_path / "small", rows=200_000, parts=2)  # two pieces: every step runs once
    write_partitions(tmp_path / "big", rows=6_000_000, parts=12, seed=1)
    table_bytes = 6_000_000 * (len(FEATURES) + 1) * 8
    assert table_bytes > 1.4 * headroom  # 384 MB in memory, 256 MiB of headroom

    small = run_child("stream", str(tmp_path / "small" / "*.parquet"))
    assert small.returncode == 0, small.stderr
    limit = json.loads(small.stdout)["peak_vm_data"] + headroom

    big = run_child("stream", str(tmp_path / "big" / "*.parquet"), limit)
    assert big.returncode == 0, big.stderr[-3000:]
    assert json.loads(big.stdout)["rows"] == 6_000_000
    assert json.loads(big.stdout)["peak_vm_data"] <= limit

    whole = run_child("load", str(tmp_path / "big" / "*.parquet"), limit)  # the limit is real
    assert whole.returncode != 0 and ("memory allocation" in whole.stderr or "MemoryError" in whole.stderr), whole.stdout
