"""Dataset adapters reading from S3 (a local moto server): same manifest as from disk."""

from __future__ import annotations

import pytest
from botocore.exceptions import NoCredentialsError
from test_datasets_adapters import CASME2_CLIPS, casme2_tree

from mer import storage
from mer.datasets import load_manifest
from mer.errors import InputError


def test_casme2_from_s3_matches_local(s3_endpoint, tmp_path):
    local = casme2_tree(tmp_path / "casme2", CASME2_CLIPS)
    fs, _ = storage.filesystem("s3://mer-test")
    fs.put(str(local) + "/", "mer-test/datasets/casme2/", recursive=True)
    root = "s3://mer-test/datasets/casme2"

    remote = load_manifest("casme2", root)
    expected = load_manifest("casme2", str(local))
    assert len(remote) == 4
    assert remote.drop(columns="source").equals(expected.drop(columns="source"))
    assert remote.attrs["rejects"] == expected.attrs["rejects"]
    assert remote["source"][0] == f"{root}/CASME2_RAW_selected/sub01/EP02_01f"
    assert all(s.startswith(f"{root}/CASME2_RAW_selected/") for s in remote["source"])

    sheet = f"{root}/CASME2-coding-20140508.xlsx"
    assert load_manifest("casme2", root, annotations=sheet).equals(remote)


@pytest.mark.parametrize("root", ["s3://no-such-bucket-mer/casme2", "s3://mer-test/no/such/prefix"])
def test_missing_bucket_or_prefix_names_the_uri(s3_endpoint, root):
    with pytest.raises(InputError, match=f"{root} does not exist"):
        load_manifest("casme2", root)


def test_s3_credential_errors_name_the_uri(monkeypatch):
    class NoCredentials:
        def isdir(self, path):
            raise NoCredentialsError()

    monkeypatch.setattr(storage, "filesystem", lambda uri: (NoCredentials(), uri[5:]))
    with pytest.raises(
        InputError, match="cannot read the SAMM root s3://bucket/samm .*credentials"
    ):
        load_manifest("samm", "s3://bucket/samm")
