"""Image folders without re-reading them: the hash index (an unchanged file is not hashed again, a
changed one is) and ``s3://`` prefixes fetched into the cache folder from a real S3-compatible server
(moto's server mode, tests/conftest.py ``s3_bucket``): a second fetch downloads nothing, a changed
object is fetched again, a removed one leaves the cache; every bad input is one line, nothing written."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from data_fixtures import write_image_folder

from hpsearch.cli import main
from hpsearch.data.cache import cache_dir, hashed_files
from hpsearch.data.sources.base import source_for
from hpsearch.data.sources.s3folder import fetch_prefix, forget_fetches
from hpsearch.errors import ConfigError, DataError

OLD_NS = 1_600_000_000 * 10**9  # a modification time far in the past: not "racy" for the hash index


def _age(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file():
            os.utime(p, ns=(OLD_NS, OLD_NS))


def test_an_unchanged_file_is_not_hashed_again(tmp_path, monkeypatch):
    monkeypatch.setenv("HPSEARCH_CACHE", str(tmp_path / "cache"))
    root = write_image_folder(tmp_path / "imgs", per_class=4, size=(8, 8))
    _age(root)
    first, stats = hashed_files(root)
    assert (stats.hashed, stats.reused, stats.saved) == (9, 0, True) and stats.index.is_file()
    assert stats.index.parent == cache_dir() / "hashes"  # beside the data, never in the user's folder
    again, stats = hashed_files(root)
    assert again == first and (stats.hashed, stats.reused) == (0, 9)

    changed = root / "top" / "001.png"
    data = bytearray(changed.read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes, a new time
    changed.write_bytes(bytes(data))
    os.utime(changed, ns=(OLD_NS + 10**9, OLD_NS + 10**9))
    (root / "bottom" / "000.png").unlink()
    now, stats = hashed_files(root)
    assert (stats.hashed, stats.reused) == (1, 7)
    mine = {f[0]: f for f in now}
    assert mine["top/001.png"][2] != {f[0]: f for f in first}["top/001.png"][2] and "bottom/000.png" not in mine

    fresh = root / "top" / "new.png"  # written just now: its time could hide a second write in the same tick
    fresh.write_bytes(b"new")
    assert hashed_files(root)[1].hashed == 1 and hashed_files(root)[1].hashed == 1  # hashed each time, not recorded


def _upload(client, bucket: str, root: Path, prefix: str) -> int:
    n = 0
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.upload_file(str(p), bucket, prefix + p.relative_to(root).as_posix())
            n += 1
    return n


def test_a_prefix_is_fetched_once_and_kept_in_step_with_the_bucket(tmp_path, s3_bucket):
    client, bucket = s3_bucket
    root = write_image_folder(tmp_path / "imgs", per_class=3, size=(8, 8), corrupt=False)
    n = _upload(client, bucket, root, "set/a/")
    client.put_object(Bucket=bucket, Key="set/a/.DS_Store", Body=b"x")  # hidden: left out, as from a folder
    client.put_object(Bucket=bucket, Key="set/b/top/0.png", Body=b"another prefix")
    url = f"s3://{bucket}/set/a/"
    forget_fetches()

    got = fetch_prefix(url)

    cache = Path(got.cache)
    assert cache == cache_dir() / "s3" / bucket / "set" / "a"
    assert (got.objects, got.downloaded, got.removed) == (n, n, 0)
    assert got.bytes == sum(p.stat().st_size for p in root.rglob("*.png"))
    assert hashed_files(cache)[0] == hashed_files(root)[0]  # the same files, byte for byte
    assert fetch_prefix(url) is got  # listed once per process
    forget_fetches()
    assert fetch_prefix(url).downloaded == 0  # a second start: nothing downloaded

    client.put_object(Bucket=bucket, Key="set/a/top/000.png", Body=b"changed")
    client.delete_object(Bucket=bucket, Key="set/a/bottom/002.png")
    forget_fetches()
    got = fetch_prefix(url)
    assert (got.objects, got.downloaded, got.removed) == (n - 1, 1, 1)
    assert (cache / "top" / "000.png").read_bytes() == b"changed" and not (cache / "bottom" / "002.png").exists()
    (cache / "top" / "001.png").write_bytes(b"edited here")  # the local copy touched: fetched again
    forget_fetches()
    assert fetch_prefix(url).downloaded == 1 and (cache / "top" / "001.png").read_bytes() != b"edited here"


def test_bad_s3_sources_are_one_line_and_write_nothing(tmp_path, s3_bucket, monkeypatch, capsys):
    """A missing bucket, an empty prefix, one object, no bucket, an unreachable endpoint, no boto3."""
    client, bucket = s3_bucket
    client.put_object(Bucket=bucket, Key="imgs/a/0.png", Body=b"x")
    forget_fetches()
    study = tmp_path / "s.yaml"
    study.write_text("""name: s3bad
data: {source: "s3://no-such-bucket-here/imgs/", image_size: [8, 8]}
model: {builder: mlp}
space: {n_neurons: {int: [4, 8]}}
search: {engine: optuna, n_trials: 1}
""")
    assert main(["validate", str(study)]) == 2  # validate reads the data, as run does before anything is written
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.source s3://no-such-bucket-here/imgs/" in err[0], err
    assert "does not exist" in err[0] and "check the bucket name" in err[0]
    assert not cache_dir().exists()  # nothing written

    refusals = {
        f"s3://{bucket}/nothing/": (DataError, "no objects under this prefix"),
        f"s3://{bucket}/imgs/a/0.png": (ConfigError, "end the value with /"),
        "s3:///imgs/": (ConfigError, "names no bucket"),
    }
    for url, (cls, words) in refusals.items():
        with pytest.raises(cls) as exc:
            source_for(url).check(_cfg(url))
            fetch_prefix(url)
        assert words in str(exc.value) and "\n" not in str(exc.value) and "data.source" in str(exc.value)

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the AWS setting: no retries
    with pytest.raises(DataError, match=r"endpoint http://127.0.0.1:9 cannot be reached .*AWS_ENDPOINT_URL"):
        fetch_prefix(f"s3://{bucket}/imgs/")
    monkeypatch.setitem(sys.modules, "boto3", None)  # boto3 not installed
    with pytest.raises(DataError, match=r"needs boto3: pip install 'hpsearch\[s3\]'"):
        fetch_prefix(f"s3://{bucket}/other/")
    assert not cache_dir().exists()


def _cfg(url: str) -> object:
    from hpsearch.spec.config import schema_from_mapping

    spec = {"name": "s", "data": {"source": url}, "model": {"builder": "mlp"},
            "space": {"n_neurons": {"int": [4, 8]}}, "search": {"engine": "optuna", "n_trials": 1}}
    return schema_from_mapping(spec, where="t")
