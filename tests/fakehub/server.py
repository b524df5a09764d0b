"""A fake Hugging Face Hub on 127.0.0.1 for download tests, with fault injection.

Answers what `huggingface_hub` and app.catalog.download ask: HEAD/GET
/{repo}/resolve/{revision}/{file} (X-Repo-Commit, ETag / X-Linked-Etag,
X-Linked-Size, Content-Length, Range → 206, optional 302 to a second "CDN"
listener), /api/models/{repo}[/revision/{rev}] (siblings with size, blob id and lfs
sha256 when blobs=True: a multi-file model folder, LFS shards beside small git files)
and /api/models/{repo}/tree/{rev}. Faults are switched per file by
the test: drop the connection after N bytes, same-size corrupted body, forced
status, gated 401/403 with the Hub's error headers, slow body, ETag that is not
a sha256, a 206 or 200 that ignores the Range, a 206 that starts elsewhere or lies,
a body that ends early (cleanly), a body or metadata request that stalls, a
redirect to anywhere. Every request is logged (method, path, Range header). Stdlib only;
never listens beyond loopback.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

DEFAULT_COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class FileFaults:
    drop_after_bytes: int | None = None  # close the socket after this many body bytes of one response
    drops_remaining: int | None = 1  # how many responses get dropped (None: every one)
    corrupt_body: bool = False  # same length, flipped bytes: only a sha256 check notices
    status: int | None = None  # answer this status (with Hub error headers) instead of the file
    error_code: str | None = None  # X-Error-Code for `status`
    seconds_per_chunk: float = 0.0  # slow body
    ignore_range: bool = False  # answer 200 with the whole file to a Range request
    etag_not_sha256: bool = False  # send the git sha1 as ETag even for an LFS file
    # How a Range request is answered: "honor"; "206-from-0": 206 with the whole file and an honest
    # "bytes 0-…"; "206-elsewhere": 206 from byte range_elsewhere, honestly labelled; "206-lying":
    # the whole file from byte 0 labelled as starting at the requested offset.
    range_mode: str = "honor"
    range_elsewhere: int = 1000
    short_by: int = 0  # GET: announce and send this many bytes fewer than the file, then end cleanly
    stall_after_bytes: int | None = None  # send this many body bytes, then nothing for stall_s
    stall_s: float = 30.0
    stall_metadata_s: float = 0.0  # HEAD and /api answers wait this long before the headers
    redirect_location: str | None = None  # answer /resolve with a 302 to this (may be "self": a loop)


@dataclass
class FakeFile:
    data: bytes
    lfs: bool = True
    faults: FileFaults = field(default_factory=FileFaults)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, FakeFile]
    gated: bool = False
    gated_status: int = 401  # the Hub uses 401 without a token, 403 with one lacking access
    commit: str = DEFAULT_COMMIT


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    range: str | None
    authorized: bool
    status: int
    body_bytes: int


class FakeHub:
    """Start with `with FakeHub() as hub:`; `hub.endpoint` is the HF_ENDPOINT to use."""

    def __init__(self, *, cdn_redirect: bool = False, valid_token: str = "hf_test_token") -> None:
        self.repos: dict[str, FakeRepo] = {}
        self.cdn_redirect = cdn_redirect
        self.valid_token = valid_token
        self.log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._stopping = threading.Event()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []

    # ---- test-facing API ----------------------------------------------------------------------

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        *,
        lfs: bool = True,
        gated: bool = False,
        gated_status: int = 401,
        git_files: frozenset[str] = frozenset(),
    ) -> FakeRepo:
        """`git_files`: names kept in git, not LFS (a model folder's config and tokenizer files),
        listed with their size and git blob id only, as the Hub does."""
        repo = FakeRepo(
            {name: FakeFile(data, lfs=lfs and name not in git_files) for name, data in files.items()},
            gated,
            gated_status,
        )
        self.repos[repo_id] = repo
        return repo

    def faults(self, repo_id: str, filename: str) -> FileFaults:
        return self.repos[repo_id].files[filename].faults

    def requests(self, method: str | None = None, path_contains: str = "") -> list[RequestRecord]:
        with self._log_lock:
            return [r for r in self.log if (method is None or r.method == method) and path_contains in r.path]

    @property
    def port(self) -> int:
        return self._servers[0].server_address[1]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    def start(self) -> FakeHub:
        for _ in range(2 if self.cdn_redirect else 1):
            server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _record(self, record: RequestRecord) -> None:
        with self._log_lock:
            self.log.append(record)


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
            pass

        def do_HEAD(self) -> None:
            self._dispatch(head=True)

        def do_GET(self) -> None:
            self._dispatch(head=False)

        # -- helpers --
        def _authorized(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.valid_token}"

        def _finish(self, status: int, body_bytes: int = 0) -> None:
            hub._record(
                RequestRecord(
                    self.command,
                    urlsplit(self.path).path,
                    self.headers.get("Range"),
                    self._authorized(),
                    status,
                    body_bytes,
                )
            )

        def _empty(self, status: int, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()
            self._finish(status)

        def _json(self, obj: object, head: bool) -> None:
            body = json.dumps(obj).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            self._finish(200, 0 if head else len(body))

        def _dispatch(self, head: bool) -> None:
            parts = urlsplit(self.path)
            path = unquote(parts.path)
            query = parse_qs(parts.query)
            self._maybe_stall_metadata(path, head)
            if path.startswith("/cdn/"):
                return self._serve_cdn(path[len("/cdn/") :], head)
            if path.startswith("/api/models/"):
                return self._serve_api(path[len("/api/models/") :], query, head)
            match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
            if not match:
                return self._empty(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Not found"})
            return self._serve_resolve(match.group(1), match.group(2), match.group(3), head)

        def _maybe_stall_metadata(self, path: str, head: bool) -> None:
            """Stall HEAD /resolve and /api requests of a repo whose file asks for it."""
            if not (head or path.startswith("/api/")):
                return
            for repo_id, repo in hub.repos.items():
                if f"/{repo_id}/" in path + "/":
                    delay = max((f.faults.stall_metadata_s for f in repo.files.values()), default=0.0)
                    hub._stopping.wait(delay)

        def _repo_or_error(self, repo_id: str) -> FakeRepo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._empty(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
                return None
            if repo.gated and not self._authorized():
                self._empty(
                    repo.gated_status,
                    {
                        "X-Error-Code": "GatedRepo",
                        "X-Error-Message": f"Access to model {repo_id} is restricted. You must have access to it "
                        "and be authenticated to access it. Please log in.",
                    },
                )
                return None
            return repo

        def _serve_api(self, rest: str, query: dict, head: bool) -> None:
            match = re.fullmatch(r"([^/]+/[^/]+)(?:/(revision|tree)/([^/]+)(?:/.*)?)?", rest)
            if not match or match.group(1) not in hub.repos:
                return self._empty(404, {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})
            repo = hub.repos[match.group(1)]  # repo metadata is public even for gated repos, as on the Hub
            with_blobs = query.get("blobs", ["false"])[0].lower() == "true"
            if match.group(2) == "tree":
                entries = []
                for name, fake in repo.files.items():
                    entry = {"type": "file", "path": name, "size": len(fake.data), "oid": git_blob_sha1(fake.data)}
                    if fake.lfs:
                        entry["lfs"] = {"oid": fake.sha256, "size": len(fake.data), "pointerSize": 134}
                    entries.append(entry)
                return self._json(entries, head)
            siblings = []
            for name, fake in repo.files.items():
                sibling: dict = {"rfilename": name}
                if with_blobs:
                    sibling.update(size=len(fake.data), blobId=git_blob_sha1(fake.data))
                    if fake.lfs:
                        sibling["lfs"] = {"sha256": fake.sha256, "size": len(fake.data), "pointerSize": 134}
                siblings.append(sibling)
            return self._json(
                {
                    "id": match.group(1),
                    "sha": repo.commit,
                    "siblings": siblings,
                    "private": False,
                    "gated": "manual" if repo.gated else False,
                },
                head,
            )

        def _serve_resolve(self, repo_id: str, revision: str, filename: str, head: bool) -> None:
            repo = self._repo_or_error(repo_id)
            if repo is None:
                return
            if revision not in ("main", repo.commit):
                return self._empty(404, {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"})
            fake = repo.files.get(filename)
            if fake is None:
                return self._empty(
                    404,
                    {
                        "X-Error-Code": "EntryNotFound",
                        "X-Repo-Commit": repo.commit,
                        "X-Error-Message": "Entry not found",
                    },
                )
            faults = fake.faults
            if faults.status is not None:
                headers = {"X-Repo-Commit": repo.commit}
                if faults.error_code:
                    headers["X-Error-Code"] = faults.error_code
                return self._empty(faults.status, headers)
            etag = git_blob_sha1(fake.data) if (not fake.lfs or faults.etag_not_sha256) else fake.sha256
            if faults.redirect_location is not None:
                location = self.path if faults.redirect_location == "self" else faults.redirect_location
                return self._empty(302, {"Location": location, "X-Repo-Commit": repo.commit})
            if hub.cdn_redirect and fake.lfs:
                # Absolute Location on another port = another origin, so the client stops there (as with the CDN).
                return self._empty(
                    302,
                    {
                        "Location": f"{hub.cdn_endpoint}/cdn/{fake.sha256}",
                        "X-Repo-Commit": repo.commit,
                        "X-Linked-Etag": f'"{etag}"',
                        "X-Linked-Size": str(len(fake.data)),
                        "ETag": '"pointer"',
                    },
                )
            self._send_file(fake, head, {"X-Repo-Commit": repo.commit, "ETag": f'"{etag}"'})

        def _serve_cdn(self, sha256: str, head: bool) -> None:
            for repo in hub.repos.values():
                for fake in repo.files.values():
                    if fake.sha256 == sha256:
                        return self._send_file(fake, head, {"ETag": f'"{sha256}"'})
            self._empty(404, {})

        def _send_file(self, fake: FakeFile, head: bool, headers: dict[str, str]) -> None:
            faults = fake.faults
            data = fake.data
            if faults.corrupt_body and data:
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            start = 0
            range_header = None if head else self.headers.get("Range")
            mode = "ignore" if faults.ignore_range else faults.range_mode
            status = 200
            if range_header and mode != "ignore":
                match = re.fullmatch(r"bytes=(\d+)-", range_header.strip())
                assert match is not None, range_header
                asked = int(match.group(1))
                if asked >= len(data):
                    return self._empty(416, {"Content-Range": f"bytes */{len(data)}"})
                start = {"honor": asked, "206-from-0": 0, "206-elsewhere": faults.range_elsewhere}.get(mode, 0)
                label = asked if mode == "206-lying" else start
                status = 206
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {label}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Accept-Ranges", "bytes")
            end = len(data) - (0 if head else faults.short_by)
            self.send_header("Content-Length", str(max(0, end - start)))
            self.end_headers()
            if head:
                return self._finish(status)
            sent = 0
            body = memoryview(data)[start:end]
            drop = faults.drop_after_bytes is not None and faults.drops_remaining != 0
            while sent < len(body) and not hub._stopping.is_set():
                piece = body[sent : sent + 16384]
                if drop and sent + len(piece) >= faults.drop_after_bytes:
                    piece = piece[: max(0, faults.drop_after_bytes - sent)]
                    self.wfile.write(piece)
                    sent += len(piece)
                    self.wfile.flush()
                    if faults.drops_remaining is not None:
                        faults.drops_remaining -= 1
                    self.connection.shutdown(socket.SHUT_RDWR)  # abrupt close mid-body
                    self.close_connection = True
                    return self._finish(status, sent)
                try:
                    self.wfile.write(piece)
                except OSError:  # client went away (cancel): nothing more to send
                    self.close_connection = True
                    return self._finish(status, sent)
                sent += len(piece)
                if faults.seconds_per_chunk:
                    time.sleep(faults.seconds_per_chunk)
                if faults.stall_after_bytes is not None and sent >= faults.stall_after_bytes:
                    self.wfile.flush()
                    hub._stopping.wait(faults.stall_s)  # headers and some bytes sent, then silence
                    self.close_connection = True
                    return self._finish(status, sent)
            self._finish(status, sent)

    return Handler
