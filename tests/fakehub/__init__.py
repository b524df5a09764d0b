"""Fake Hugging Face Hub for offline download tests (see server.py). Stdlib only; loopback only."""

from tests.fakehub.server import FakeHub, FileFaults, git_blob_sha1

__all__ = ["FakeHub", "FileFaults", "git_blob_sha1"]
