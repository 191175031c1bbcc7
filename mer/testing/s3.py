"""One local S3 endpoint for tests, benchmarks and scripts/: a moto server on 127.0.0.1.

`LocalS3(bucket).start()` starts the server, creates the bucket and sets the AWS_* variables
so that s3fs, pyarrow and every process started afterwards (Ray workers, local cluster
nodes, as an instance profile would) reach it; `close()` stops it and puts the variables
back. `pause()` and `resume()` take the endpoint away and bring it back with what it stored
(moto keeps its state in-process), for failure tests. Also a context manager.
"""

from __future__ import annotations

import os

import boto3
from moto.server import ThreadedMotoServer

from mer.testing.local_processes import free_ports


class LocalS3:
    def __init__(self, bucket: str, env: dict[str, str] | None = None) -> None:
        self.bucket = bucket
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            **(env or {}),
        }
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self._saved: dict[str, str | None] = {}

    def start(self) -> LocalS3:
        self._server.start()
        self._saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=self.bucket)
        return self

    def pause(self) -> None:
        self._server.stop()

    def resume(self) -> None:
        self._server.start()

    def close(self) -> None:
        self._server.stop()
        for k, v in self._saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __enter__(self) -> LocalS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()
