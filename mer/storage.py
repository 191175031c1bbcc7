"""Local paths and s3:// URIs behind one small API (fsspec + s3fs, pyarrow for Parquet).

S3 credentials and endpoint come from the usual AWS sources (instance profile, environment,
~/.aws); a non-AWS endpoint (MinIO, a local test server) is set with AWS_ENDPOINT_URL.
Writes are whole-object: a local file is written under a temporary name and renamed, an S3
object appears only when its upload completes, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import posixpath
import uuid
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq

from mer.errors import InputError, StorageError


def is_remote(uri: str) -> bool:
    return "://" in str(uri) and not str(uri).startswith("file://")


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a local path or URI with forward slashes."""
    uri = str(uri)
    if is_remote(uri):
        return posixpath.join(uri, *[str(p) for p in parts])
    return os.path.join(uri, *[str(p) for p in parts])


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """Return (filesystem, path inside it) for a local path or URI."""
    uri = str(uri)
    if uri.startswith("s3://"):
        # s3fs caches listings per instance; a fresh listing is what a resumable job needs.
        # The endpoint is part of the cache key, so a changed AWS_ENDPOINT_URL takes effect.
        fs = fsspec.filesystem(
            "s3", use_listings_cache=False, endpoint_url=os.environ.get("AWS_ENDPOINT_URL")
        )
        return fs, uri[len("s3://") :]
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, path


def pyarrow_filesystem(uri: str):
    """Return (pyarrow.fs.FileSystem, path) for Ray Train/Tune `storage_filesystem`."""
    import pyarrow.fs as pafs

    if uri.startswith("s3://"):
        fs, path = filesystem(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path
    return pafs.LocalFileSystem(), os.path.abspath(uri)


def check_reachable(uri: str, name: str = "root") -> None:
    """For an s3:// URI: credentials are found and its bucket exists and answers; otherwise
    one sentence naming the setting and the URI. Local paths are left to the stage."""
    if not str(uri).startswith("s3://"):
        return
    bucket = uri[len("s3://") :].split("/", 1)[0]
    import botocore.session

    if botocore.session.get_session().get_credentials() is None:
        # s3fs would fall back to anonymous requests, and a private bucket then looks absent.
        raise StorageError(
            f"{name} {uri} cannot be reached: no AWS credentials were found (environment, "
            "~/.aws or an instance profile)"
        )
    fs, _ = filesystem(uri)
    try:
        found = fs.exists(bucket)
    except PermissionError as e:
        raise StorageError(f"{name} {uri}: access to bucket {bucket} denied ({e})") from None
    except Exception as e:  # botocore: no credentials, endpoint unreachable, ...
        kind = type(e).__name__
        hint = (
            "no AWS credentials were found (environment, ~/.aws or an instance profile)"
            if "Credential" in kind or "credential" in str(e)
            else f"{kind}: {str(e).splitlines()[0][:160] if str(e) else kind}"
        )
        raise StorageError(f"{name} {uri} cannot be reached: {hint}") from None
    if not found:
        raise StorageError(f"{name} {uri}: bucket {bucket} does not exist (or is not visible)")


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    try:
        return fs.exists(path)
    except PermissionError as e:
        raise InputError(f"{uri}: access denied ({e}); check the S3 credentials") from e


def makedirs(uri: str) -> None:
    fs, path = filesystem(uri)
    if not is_remote(uri):
        fs.makedirs(path, exist_ok=True)


def listdir(uri: str) -> list[str]:
    """Names (not paths) of the entries directly under `uri`, sorted; [] if absent."""
    fs, path = filesystem(uri)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries)


def entries(uri: str) -> list[tuple[str, str]] | None:
    """(name, "file" | "directory") of the visible entries under `uri`; None if it does not
    exist. Names starting with "." are skipped."""
    fs, path = filesystem(uri)
    if not is_remote(uri):
        return _local_entries(path)
    try:
        found = fs.ls(path, detail=True)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError as e:
        raise InputError(f"{uri}: access denied ({e}); check the AWS credentials") from e
    out = []
    for e in found:
        name = posixpath.basename(e["name"].rstrip("/"))
        if name and not name.startswith(".") and e["name"].rstrip("/") != path.rstrip("/"):
            out.append((name, "directory" if e["type"] == "directory" else "file"))
    return out


def _local_entries(path: str) -> list[tuple[str, str]] | None:
    """entries() of a local folder from one os.scandir, as fsspec's local listing gives them
    (a symbolic link is a "file", a file's own path lists nothing) without its stat() per
    entry: listing a clip's frame folder cost about a third of decoding its JPEG frames."""
    try:
        with os.scandir(path) as found:
            return [
                (e.name, "directory" if e.is_dir(follow_symlinks=False) else "file")
                for e in found
                if not e.name.startswith(".")
            ]
    except NotADirectoryError:
        return []
    except FileNotFoundError:
        return None
    except PermissionError as e:
        raise InputError(f"{path}: access denied ({e})") from e


def remove(uri: str, recursive: bool = False) -> None:
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def read_bytes(uri: str) -> bytes:
    fs, path = filesystem(uri)
    try:
        with fs.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError as e:
        raise InputError(f"{uri}: no such file") from e


def write_bytes(uri: str, data: bytes) -> None:
    """Write a whole object/file; local writes go through a temporary name + rename."""
    fs, path = filesystem(uri)
    if is_remote(uri):
        try:
            with fs.open(path, "wb") as f:
                f.write(data)
        except Exception as e:  # s3fs has already retried transient errors
            raise StorageError(
                f"writing {uri} failed ({type(e).__name__}: {e}); nothing was written there, "
                "rerun the stage once the storage is reachable"
            ) from e
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def read_json(uri: str) -> Any:
    return json.loads(read_bytes(uri).decode("utf-8"))


def write_json(uri: str, obj: Any) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def write_parquet(table: pa.Table, uri: str) -> None:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(uri, sink.getvalue().to_pybytes())


def read_parquet(uri: str, columns: list[str] | None = None, filters=None) -> pa.Table:
    fs, path = filesystem(uri)
    try:
        return pq.read_table(path, filesystem=fs, columns=columns, filters=filters)
    except FileNotFoundError as e:
        raise InputError(f"{uri}: no such Parquet file or folder") from e
