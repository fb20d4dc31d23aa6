"""A Hugging Face hub on 127.0.0.1, for tests: the endpoints huggingface_hub and datasets call.

Repos are in-memory trees of files at pinned commits (the exact revision ids mteb's task metadata
names), served with the hub's API: repo info by revision, tree listings, paths-info, ``resolve``
downloads with commit and ETag headers and range requests, and 404s carrying the hub's error codes.
Written with the standard library because no PyPI package serves pinned revision ids (checked: one
needs a Go binary it does not ship, one serves git repos); it binds loopback only.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit


def git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # noqa: S324 - git's own id


@dataclass
class Repo:
    kind: str  # "model" | "dataset"
    repo_id: str
    commit: str  # 40 hex digits
    files: dict[str, bytes]
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit (main by default)

    def resolves(self, revision: str) -> bool:
        return revision in (self.commit, "main", *self.branches)


def folder_files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its path relative to it (a model directory, say)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class FakeHub:
    """``with FakeHub(repos) as hub:`` serves on ``hub.endpoint`` until the block ends."""

    def __init__(self, repos: list[Repo]) -> None:
        self.repos = {(r.kind, r.repo_id): r for r in repos}
        self.requests: list[str] = []  # "METHOD path", for tests that look at what was asked
        self._server: ThreadingHTTPServer | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the hub is not serving"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


_API = re.compile(r"^/api/(models|datasets)/(?P<rest>.+)$")
_RESOLVE = re.compile(
    r"^/(?:(?P<kind>datasets)/)?(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet: tests read ``fake.requests`` instead
        pass

    # -- plumbing -----------------------------------------------------------------------------
    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        head: bool = False,
    ) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self._send(
            status,
            body,
            {"Content-Type": "application/json", **(headers or {})},
            head=self.command == "HEAD",
        )

    def _error(self, code: str, message: str) -> None:
        self._json(404, {"error": message}, {"X-Error-Code": code, "X-Error-Message": message})

    def _repo(self, kind: str, repo_id: str, revision: str | None) -> Repo | None:
        repo = self.fake.repos.get((kind, repo_id))
        if repo is None:
            self._error("RepoNotFound", f"Repository Not Found for url: {self.path}.")
            return None
        if revision is not None and not repo.resolves(revision):
            self._error("RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo

    # -- verbs --------------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route()

    def do_GET(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def _route(self) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        self.fake.requests.append(f"{self.command} {path}")
        api = _API.match(url.path)
        if api:
            return self._api(
                "model" if api.group(1) == "models" else "dataset", api.group("rest"), url.query
            )
        resolve = _RESOLVE.match(url.path)
        if resolve:
            kind = "dataset" if resolve.group("kind") else "model"
            return self._resolve(
                kind,
                unquote(resolve.group("repo")),
                unquote(resolve.group("rev")),
                unquote(resolve.group("path")),
            )
        self._error("EntryNotFound", f"no route for {path}")

    def _api(self, kind: str, rest: str, query: str) -> None:
        parts = rest.split("/")
        repo_id, tail = "/".join(parts[:2]), parts[2:]
        if not tail or tail[0] == "revision":
            revision = unquote(tail[1]) if len(tail) > 1 else "main"
            repo = self._repo(kind, repo_id, revision)
            if repo:
                self._json(200, self._info(repo))
        elif tail[0] == "tree" and len(tail) >= 2:
            repo = self._repo(kind, repo_id, unquote(tail[1]))
            if repo:
                prefix = unquote("/".join(tail[2:])).strip("/")
                recursive = parse_qs(query).get("recursive", ["false"])[0].lower() in ("1", "true")
                self._json(200, self._tree(repo, prefix, recursive))
        elif tail[0] == "paths-info" and len(tail) >= 2:
            repo = self._repo(kind, repo_id, unquote(tail[1]))
            if repo:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                wanted = form.get("paths", [])
                self._json(200, [e for e in self._entries(repo) if e["path"] in wanted])
        else:
            self._error("EntryNotFound", f"unknown API path {rest}")

    # -- payloads -----------------------------------------------------------------------------
    @staticmethod
    def _info(repo: Repo) -> dict:
        return {
            "id": repo.repo_id,
            "_id": repo.repo_id,
            "sha": repo.commit,
            "private": False,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2024-01-01T00:00:00.000Z",
            "cardData": {},
            "siblings": [{"rfilename": p} for p in sorted(repo.files)],
        }

    @staticmethod
    def _entries(repo: Repo) -> list[dict]:
        """Every file and folder of the tree, as the tree API lists them."""
        folders = {
            "/".join(p.split("/")[:i]) for p in repo.files for i in range(1, p.count("/") + 1)
        }
        out = [
            {"type": "directory", "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0, "path": d}  # noqa: S324
            for d in sorted(folders)
        ]
        out += [
            {"type": "file", "oid": git_blob_sha(b), "size": len(b), "path": p}
            for p, b in sorted(repo.files.items())
        ]
        return out

    def _tree(self, repo: Repo, prefix: str, recursive: bool) -> list[dict]:
        def inside(path: str) -> bool:
            if prefix and not path.startswith(prefix + "/"):
                return False
            rest = path[len(prefix) + 1 :] if prefix else path
            return recursive or "/" not in rest

        return [e for e in self._entries(repo) if inside(e["path"])]

    def _resolve(self, kind: str, repo_id: str, revision: str, path: str) -> None:
        repo = self._repo(kind, repo_id, revision)
        if repo is None:
            return
        data = repo.files.get(path)
        if data is None:
            self._error("EntryNotFound", f"{path} does not exist on {revision}")
            return
        headers = {
            "X-Repo-Commit": repo.commit,
            "ETag": f'"{git_blob_sha(data)}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
        }
        status, body = 200, data
        ranged = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", ""))
        if ranged:
            start = int(ranged.group(1) or 0)
            end = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
            status, body = 206, data[start : end + 1]
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        self._send(status, body, headers, head=self.command == "HEAD")


# -- repos in the layouts mteb reads ------------------------------------------------------------
def _jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def _card(configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose YAML names each config's split files (how the hub declares them)."""
    lines = ["---", "configs:"]
    for name, splits in configs.items():
        lines += [f"- config_name: {name}", "  data_files:"]
        lines += [f"  - split: {split}\n    path: {path}" for split, path in splits.items()]
    return ("\n".join([*lines, "---", "", "A test dataset.", ""])).encode()


def beir_repo(repo_id: str, commit: str, splits: dict, per_split: bool = False) -> Repo:
    """mteb's BEIR layout (configs default = qrels per split, corpus, queries) from
    ``{split: RetrievalSplit}``; corpus and queries are the union over splits, or with
    ``per_split`` one split of each per evaluated split (as mteb/LEMBPasskeyRetrieval has them)."""

    def rows(kind: str, items: list[dict]) -> bytes:
        if kind == "corpus":
            return _jsonl(
                [{"_id": d["id"], "title": d.get("title", ""), "text": d["text"]} for d in items]
            )
        return _jsonl([{"_id": q["id"], "text": q["text"]} for q in items])

    files, card = {}, {}
    for kind in ("corpus", "queries"):
        if per_split:
            for name, s in splits.items():
                files[f"{kind}/{name}.jsonl"] = rows(kind, getattr(s, kind))
            card[kind] = {name: f"{kind}/{name}.jsonl" for name in splits}
        else:
            union = {x["id"]: x for s in splits.values() for x in getattr(s, kind)}
            files[f"{kind}.jsonl"] = rows(kind, list(union.values()))
            card[kind] = {kind: f"{kind}.jsonl"}
    for name, s in splits.items():
        files[f"qrels/{name}.jsonl"] = _jsonl(
            [
                {"query-id": q, "corpus-id": d, "score": g}
                for q, docs in s.qrels.items()
                for d, g in docs.items()
            ]
        )
    files["README.md"] = _card({"default": {n: f"qrels/{n}.jsonl" for n in splits}, **card})
    return Repo("dataset", repo_id, commit, files)


def _parquet(rows: list[dict], columns: dict[str, str]) -> bytes:
    """One parquet file with an explicit schema, so columns left None in one split keep the type
    they have in the others (datasets wants one schema per config)."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(name, getattr(pa, kind)()) for name, kind in columns.items()])
    table = pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows], schema=schema)
    out = io.BytesIO()
    pq.write_table(table, out)
    return out.getvalue()


LONGEMBED_COLUMNS = {
    "qid": "string",
    "doc_id": "string",
    "text": "string",
    "context_length": "int64",
}


def longembed_repo(commit: str, configs: dict[str, dict]) -> Repo:
    """``dwzhu/LongEmbed``'s layout: per config (needle, ...) splits queries / corpus / qrels, each
    row tagged with its context_length; ``configs`` is ``{name: {length: RetrievalSplit}}``."""
    files, card = {}, {}
    for name, by_length in configs.items():
        rows: dict[str, list[dict]] = {"queries": [], "corpus": [], "qrels": []}
        for length, s in by_length.items():
            rows["queries"] += [
                {"qid": q["id"], "text": q["text"], "context_length": length} for q in s.queries
            ]
            rows["corpus"] += [
                {"doc_id": d["id"], "text": d["text"], "context_length": length} for d in s.corpus
            ]
            rows["qrels"] += [
                {"qid": q, "doc_id": d, "context_length": length}
                for q, docs in s.qrels.items()
                for d in docs
            ]
        for split, r in rows.items():
            files[f"{name}/{split}.parquet"] = _parquet(r, LONGEMBED_COLUMNS)
        card[name] = {split: f"{name}/{split}.parquet" for split in rows}
    files["README.md"] = _card(card)
    return Repo("dataset", "dwzhu/LongEmbed", commit, files)


ROOT = Path(__file__).resolve().parents[1]


def run_cli(
    args: list[str], endpoint: str, hf_home: Path, offline: bool = False
) -> subprocess.CompletedProcess:
    """``lmk-eval`` in a fresh process, so HF_ENDPOINT and HF_HOME are set before any import."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "MTEB_"))}
    env |= {"HF_ENDPOINT": endpoint, "HF_HOME": str(hf_home), "HF_HUB_DISABLE_TELEMETRY": "1"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "lmk_eval.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
