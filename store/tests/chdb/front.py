"""A test-only ClickHouse HTTP front over chDB (PyPI `chdb-core`, the current ClickHouse
engine in-process), so that the store's own code runs its modern DDL and every query against a
current engine.

    python front.py --port 18123 --path /tmp/chdb-data

What it emulates of ClickHouse's HTTP interface (what the `clickhouse` crate uses):
- `GET /ping` answers `Ok.`.
- `POST /` with the SQL as the body, `database` and `default_format` (e.g. `RowBinary`) from
  the URL: the answer is the result in that format.
- `POST /?query=INSERT ... FORMAT RowBinary` with the rows as the body (chunked or not): the
  rows are written to a temporary file and inserted with `FROM INFILE`.
- An error is a 500 with ClickHouse's `Code: N. DB::Exception: ...` text and the
  `X-ClickHouse-Exception-Code` header.

- The insert deduplication settings in the URL (`deduplicate_insert`, `insert_deduplicate`,
  `insert_deduplication_token`, `deduplicate_blocks_in_dependent_materialized_views`) hold for
  that one statement: `SET` before it, back to the defaults after.

What it does not: every other URL parameter (settings such as `insert_distributed_sync`,
`distributed_product_mode`, credentials) is ignored; there is one node, so no cluster, no
`Distributed` tables, no `ON CLUSTER`; queries run one at a time (one chDB session, a lock), so
concurrency is only that of the client's requests queueing; no compression, no sessions, no
query ids, no progress headers.
"""

import argparse
import os
import re
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from chdb import session as chs

LOCK = threading.Lock()
SESSION = None
IDENT = re.compile(r"^[A-Za-z0-9_]+$")
CODE = re.compile(r"Code: (\d+)")
# The per-statement settings the front applies, with the values it restores after.
SETTINGS = {
    "deduplicate_insert": "'enable'",
    "insert_deduplicate": "1",
    "insert_deduplication_token": "''",
    "deduplicate_blocks_in_dependent_materialized_views": "0",
}
TOKEN = re.compile(r"^[\x20-\x7e]*$")


def quoted(value):
    if value.isdigit():
        return value
    if not TOKEN.match(value):
        raise ValueError(f"setting value {value!r} is not printable ASCII")
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def run(sql, database, fmt, data=None, settings=()):
    with LOCK:
        try:
            for name, value in settings:
                SESSION.query(f"SET {name} = {quoted(value)}")
            return run_locked(sql, database, fmt, data)
        finally:
            for name, _ in settings:
                SESSION.query(f"SET {name} = {SETTINGS[name]}")


def run_locked(sql, database, fmt, data):
    if database and IDENT.match(database):
        exists = SESSION.query(
            f"SELECT count() FROM system.databases WHERE name = '{database}'", "TSV"
        ).bytes()
        SESSION.query(f"USE {database if exists.strip() == b'1' else 'default'}")
    else:
        SESSION.query("USE default")
    if data is None:
        return SESSION.query(sql, fmt).bytes()
    with tempfile.NamedTemporaryFile(suffix=".bin") as f:
        f.write(data)
        f.flush()
        head, _, fmt_in = sql.rpartition(" FORMAT ")
        path = f.name.replace("'", "")
        SESSION.query(f"{head} FROM INFILE '{path}' FORMAT {fmt_in.strip()}")
    return b""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def answer(self, status, payload, headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/ping":
            return self.answer(200, b"Ok.\n")
        params = parse_qs(url.query)
        self.execute(params.get("query", [""])[0], params, None)

    def do_POST(self):
        params = parse_qs(urlparse(self.path).query)
        body = self.body()
        if "query" in params:
            self.execute(params["query"][0], params, body)
        else:
            self.execute(body.decode(), params, None)

    def execute(self, sql, params, data):
        database = params.get("database", [""])[0]
        fmt = params.get("default_format", ["TabSeparated"])[0]
        settings = [(k, v[0]) for k, v in params.items() if k in SETTINGS]
        try:
            out = run(sql, database, fmt, data, settings)
        except Exception as e:  # chDB raises with ClickHouse's own message
            text = str(e)
            m = CODE.search(text)
            code = m.group(1) if m else "1001"
            return self.answer(
                500,
                (text if text.startswith("Code:") else f"Code: {code}. DB::Exception: {text}").encode(),
                [("X-ClickHouse-Exception-Code", code)],
            )
        self.answer(200, out)


def main():
    global SESSION
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=18123)
    ap.add_argument("--path", default=None)
    a = ap.parse_args()
    path = a.path or tempfile.mkdtemp(prefix="profwatch-chdb-")
    os.makedirs(path, exist_ok=True)
    SESSION = chs.Session(path)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    print(f"chdb front on http://127.0.0.1:{server.server_address[1]} ({path})", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
