"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for testing the real client offline.

It speaks the parts of the Hub API that `huggingface_hub` uses to create repos, upload (preupload,
LFS batch with basic and multipart transfers, NDJSON commits) and download (HEAD/GET resolve,
revision info, tree). Storage is in memory. Writes need a bearer token; reads do not.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".png")
MULTIPART_THRESHOLD = 128 * 1024  # larger LFS objects are uploaded in parts, like the real Hub's S3
CHUNK_SIZE = 64 * 1024
REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
PREFIX = r"(?P<prefix>datasets/|spaces/)?"


class HubState:
    def __init__(self):
        self.lock = threading.Lock()
        self.repos = {}  # (type, repo_id) -> {"refs": {name: sha}, "commits": {sha: {path: (oid, is_lfs)}}}
        self.blobs = {}  # oid -> bytes (sha256 for LFS objects, sha1 for regular files)
        self.parts = {}  # lfs oid -> {part number: bytes}
        self.requests = []  # (method, path) log, for tests
        self.commits = []  # {"repo", "revision", "query", "paths"} of every commit call, for tests


def _new_commit(repo, files):
    sha = uuid.uuid4().hex + uuid.uuid4().hex[:8]
    repo["commits"][sha] = files
    repo["refs"]["main"] = sha
    return sha


class HubHandler(BaseHTTPRequestHandler):
    server_version = "TinyHub/1.0"
    protocol_version = "HTTP/1.1"

    # -- plumbing -------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def log_message(self, *args):  # quiet
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status, payload=None, headers=None, body=None, head=False):
        data = body if body is not None else (json.dumps(payload).encode() if payload is not None else b"")
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if body is None and payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _error(self, status, code, message, extra=None, head=False):
        headers = {"X-Error-Code": code, "X-Error-Message": message, **(extra or {})}
        self._send(status, {"error": message}, headers, head=head)

    def _authorized(self) -> bool:
        if (self.headers.get("Authorization") or "").startswith("Bearer "):
            return True
        self._error(401, "Unauthorized", "Invalid username or password.")
        return False

    def _repo(self, prefix, repo_id):
        kind = {"datasets/": "dataset", "spaces/": "space"}.get(prefix or "", "model")
        return self.state.repos.get((kind, repo_id)), kind

    def _commit(self, repo, revision):
        revision = unquote(revision)
        sha = repo["refs"].get(revision) or (revision if revision in repo["commits"] else None)
        return sha, (repo["commits"][sha] if sha else None)

    def _route(self, method):
        url = urlparse(self.path)
        path, query = unquote(url.path), parse_qs(url.query)
        self.state.requests.append((method, path))
        routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("POST", rf"/api/(?P<kind>models|datasets|spaces)/{REPO}/preupload/(?P<rev>.+)", self.preupload),
            ("POST", rf"/api/(?P<kind>models|datasets|spaces)/{REPO}/commit/(?P<rev>.+)", self.commit),
            ("GET", rf"/api/(?P<kind>models|datasets|spaces)/{REPO}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", self.tree),
            ("GET", rf"/api/(?P<kind>models|datasets|spaces)/{REPO}(?:/revision/(?P<rev>.+))?", self.info),
            ("POST", rf"/{PREFIX}{REPO}\.git/info/lfs/objects/batch", self.lfs_batch),
            ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", self.lfs_put),
            ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})/part/(?P<part>\d+)", self.lfs_put_part),
            ("POST", r"/_lfs/(?P<oid>[0-9a-f]{64})/complete", self.lfs_complete),
            ("GET", rf"/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
            ("HEAD", rf"/{PREFIX}{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self.resolve),
        ]
        for verb, pattern, handler in routes:
            match = re.fullmatch(pattern, path)
            if verb == method and match:
                with self.state.lock:
                    return handler(query=query, **match.groupdict())
        self._error(404, "NotFound", f"no route for {method} {path}", head=method == "HEAD")

    def do_GET(self):
        self._route("GET")

    def do_HEAD(self):
        self._route("HEAD")

    def do_POST(self):
        self._route("POST")

    def do_PUT(self):
        self._route("PUT")

    # -- repos ----------------------------------------------------------------------------------
    def create_repo(self, query):
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        kind = payload.get("type") or "model"
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if "/" not in repo_id:
            repo_id = f"user/{repo_id}"
        url = f"{self.base}/{'' if kind == 'model' else kind + 's/'}{repo_id}"
        if (kind, repo_id) in self.state.repos:
            # like the real Hub, the 409 body carries the url (huggingface_hub's create_repo(exist_ok=True) reads it)
            headers = {
                "X-Error-Code": "RepoExists",
                "X-Error-Message": "You already created this repo",
                "X-Repo-Url": url,
            }
            return self._send(409, {"error": "You already created this repo", "url": url}, headers)
        repo = {"refs": {}, "commits": {}}
        attributes = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
        oid = hashlib.sha1(attributes).hexdigest()
        self.state.blobs[oid] = attributes
        _new_commit(repo, {".gitattributes": (oid, False)})
        self.state.repos[(kind, repo_id)] = repo
        self._send(200, {"url": url, "name": repo_id})

    def validate_yaml(self, query):
        payload = json.loads(self._body() or b"{}")
        content = payload.get("content", "")
        if not content.startswith("---"):
            return self._send(200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata"}]})
        self._send(200, {"errors": [], "warnings": []})

    def info(self, query, kind, repo, rev=None):
        entry, _ = self._repo({"models": "", "datasets": "datasets/", "spaces": "spaces/"}[kind], repo)
        if entry is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha, files = self._commit(entry, rev or "main")
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        siblings = [{"rfilename": p, "size": len(self.state.blobs[o])} for p, (o, _) in sorted(files.items())]
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        self._send(
            200,
            {
                "id": repo,
                "modelId": repo,
                "sha": sha,
                "private": False,
                "siblings": siblings,
                "lastModified": now,
                "createdAt": now,
                "tags": [],
                "downloads": 0,
                "likes": 0,
            },
        )

    def tree(self, query, kind, repo, rev, sub=None):
        entry, _ = self._repo({"models": "", "datasets": "datasets/", "spaces": "spaces/"}[kind], repo)
        if entry is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha, files = self._commit(entry, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        root = (sub or "").strip("/")
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        entries, folders = [], set()
        for path, (oid, is_lfs) in sorted(files.items()):
            if root and not path.startswith(root + "/"):
                continue
            rest = path[len(root) + 1 :] if root else path
            parts = rest.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(([root] if root else []) + parts[:depth])
                if (recursive or depth == 1) and folder not in folders:
                    folders.add(folder)
                    entries.append(
                        {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder}
                    )
            if recursive or len(parts) == 1:
                size = len(self.state.blobs[oid])
                item = {"type": "file", "oid": oid, "size": size, "path": path}
                if is_lfs:
                    item["lfs"] = {"oid": oid, "size": size, "pointerSize": 134}
                entries.append(item)
        self._send(200, entries)

    # -- uploads --------------------------------------------------------------------------------
    def preupload(self, query, kind, repo, rev):
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        if self._repo({"models": "", "datasets": "datasets/", "spaces": "spaces/"}[kind], repo)[0] is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        files = [
            {
                "path": f["path"],
                "shouldIgnore": False,
                "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) or f["size"] >= 1 << 20 else "regular",
            }
            for f in payload.get("files", [])
        ]
        self._send(200, {"files": files, "commitOid": None})

    def lfs_batch(self, query, repo, prefix=None):
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        if self._repo(prefix, repo)[0] is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        objects, multipart = [], False
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            if oid in self.state.blobs:
                objects.append({"oid": oid, "size": size})  # already stored: nothing to upload
            elif size > MULTIPART_THRESHOLD:
                multipart = True
                parts = -(-size // CHUNK_SIZE)
                header = {"chunk_size": str(CHUNK_SIZE)}
                header.update({str(i + 1): f"{self.base}/_lfs/{oid}/part/{i + 1}" for i in range(parts)})
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {"upload": {"href": f"{self.base}/_lfs/{oid}/complete", "header": header}},
                    }
                )
            else:
                objects.append(
                    {
                        "oid": oid,
                        "size": size,
                        "authenticated": True,
                        "actions": {"upload": {"href": f"{self.base}/_lfs/{oid}"}},
                    }
                )
        self._send(200, {"transfer": "multipart" if multipart else "basic", "objects": objects})

    def lfs_put(self, query, oid):
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadRequest", "sha256 mismatch")
        self.state.blobs[oid] = data
        self._send(200, {})

    def lfs_put_part(self, query, oid, part):
        data = self._body()
        self.state.parts.setdefault(oid, {})[int(part)] = data
        self._send(200, {}, {"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    def lfs_complete(self, query, oid):
        payload = json.loads(self._body() or b"{}")
        stored = self.state.parts.pop(oid, {})
        try:
            data = b"".join(stored[p["partNumber"]] for p in sorted(payload["parts"], key=lambda p: p["partNumber"]))
        except KeyError:
            return self._error(400, "BadRequest", "missing part")
        if hashlib.sha256(data).hexdigest() != oid:
            return self._error(400, "BadRequest", "sha256 mismatch after assembling the parts")
        self.state.blobs[oid] = data
        self._send(200, {})

    def commit(self, query, kind, repo, rev):
        lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
        if not self._authorized():
            return
        entry, _ = self._repo({"models": "", "datasets": "datasets/", "spaces": "spaces/"}[kind], repo)
        if entry is None:
            return self._error(404, "RepoNotFound", "Repository not found")
        sha, files = self._commit(entry, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        files = dict(files)
        paths = [line["value"]["path"] for line in lines if line["key"] in ("file", "lfsFile")]
        self.state.commits.append({"repo": repo, "revision": unquote(rev), "query": query, "paths": paths})
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "file":
                data = base64.b64decode(value["content"])
                oid = hashlib.sha1(data).hexdigest()
                self.state.blobs[oid] = data
                files[value["path"]] = (oid, False)
            elif key == "lfsFile":
                if value["oid"] not in self.state.blobs:
                    return self._error(400, "BadRequest", f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = (value["oid"], True)
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                files = {p: v for p, v in files.items() if not p.startswith(value["path"].rstrip("/") + "/")}
        new_sha = _new_commit(entry, files)
        self._send(
            200, {"commitUrl": f"{self.base}/{repo}/commit/{new_sha}", "commitOid": new_sha, "pullRequestUrl": None}
        )

    # -- downloads ------------------------------------------------------------------------------
    def resolve(self, query, repo, rev, file, prefix=None):
        head = self.command == "HEAD"
        entry, _ = self._repo(prefix, repo)
        if entry is None:
            return self._error(404, "RepoNotFound", "Repository not found", head=head)
        sha, files = self._commit(entry, rev)
        if sha is None:
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}", head=head)
        if file not in files:
            return self._error(404, "EntryNotFound", f"{file} does not exist", {"X-Repo-Commit": sha}, head=head)
        oid, is_lfs = files[file]
        data = self.state.blobs[oid]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{oid}"', "Content-Type": "application/octet-stream"}
        if is_lfs:
            headers.update({"X-Linked-Etag": f'"{oid}"', "X-Linked-Size": str(len(data))})
        self._send(200, headers=headers, body=data, head=head)


class HubServer:
    """`with HubServer() as hub:` serves on `hub.endpoint` (http://127.0.0.1:PORT) from a thread."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.httpd = ThreadingHTTPServer((host, port), HubHandler)
        self.httpd.daemon_threads = True
        self.httpd.state = HubState()
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def state(self) -> HubState:
        return self.httpd.state

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
