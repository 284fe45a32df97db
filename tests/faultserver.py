"""A loopback HTTP file server that misbehaves on request (the ingest fault-injection suite).

``FaultServer(directory)`` serves files with ``Range`` support (206 + ``Content-Range``) and, per
URL path, a list of scripted faults consumed one request at a time::

    srv.faults["/data/.../X.zip"] = ["503", "429", "drop", "hang"]

``"503"``/``"500"``/``"429"``/``"404"``: that status, empty body. ``"drop"``: the headers of the
full answer, half the body, then the connection is closed. ``"short"``: a ``Content-Length``
larger than the body sent. ``"hang"``: nothing sent for ``hang_s`` seconds (then a 503).
``"trickle"``: the body at ``trickle_bps`` bytes per second. ``"norange"``: a plain 200 with the
whole body even when a ``Range`` was asked. A request with no fault left is answered normally.
``hits`` counts requests per path, ``ranges`` records the ``Range`` headers received, ``auth`` the
``Authorization`` ones.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import threading
import time
import urllib.parse


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *a, server_state: "FaultServer", **kw):
        self.state = server_state
        super().__init__(*a, **kw)

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self._serve(head=True)

    def do_GET(self):
        self._serve(head=False)

    def _take_fault(self, path: str):
        st = self.state
        with st.lock:
            st.hits[path] = st.hits.get(path, 0) + 1
            if self.headers.get("Range"):
                st.ranges.append((path, self.headers["Range"]))
            if self.headers.get("Authorization"):
                st.auth.append(self.headers["Authorization"])
            queue = st.faults.get(path)
            return queue.pop(0) if queue else None

    def _serve(self, head: bool):
        path = urllib.parse.urlsplit(self.path).path
        fault = self._take_fault(path)
        if fault in ("500", "503", "429", "404"):
            return self._status(int(fault))
        if fault == "hang":
            time.sleep(self.state.hang_s)
            return self._status(503)
        local = os.path.join(self.state.directory, *[p for p in path.split("/") if p])
        if not os.path.isfile(local):
            return self._status(404)
        with open(local, "rb") as f:
            data = f.read()
        m = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
        start = int(m.group(1)) if m and fault != "norange" else 0
        if start >= len(data) and start:
            return self._status(416, {"Content-Range": f"bytes */{len(data)}"})
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        body = data[start:]
        self.send_header("Content-Length", str(len(body) + (1000 if fault == "short" else 0)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not head:
            self._body(body, fault)

    def _body(self, body: bytes, fault):
        if fault == "drop":
            body = body[: len(body) // 2]
        if fault == "trickle":
            for i in range(0, len(body), 64):
                self.wfile.write(body[i : i + 64])
                self.wfile.flush()
                time.sleep(64 / self.state.trickle_bps)
        else:
            self.wfile.write(body)
            self.wfile.flush()
        if fault in ("drop", "short"):
            self.close_connection = True

    def _status(self, code: int, headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", "0")
        self.end_headers()


class FaultServer:
    def __init__(self, directory: str, hang_s: float = 30.0, trickle_bps: int = 256):
        self.directory = directory
        self.faults: dict[str, list[str]] = {}
        self.hits: dict[str, int] = {}
        self.ranges: list[tuple[str, str]] = []
        self.auth: list[str] = []
        self.hang_s, self.trickle_bps = hang_s, trickle_bps
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(_Handler, server_state=self)
        )
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
