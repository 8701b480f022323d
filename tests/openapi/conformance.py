#!/usr/bin/env python3
"""The server against its contract: starts build/e2gan-server (a fresh ngf-8
model from `e2gan init`, an admin token, a jobs folder) and calls every
operation of openapi.yaml, including a real fine-tuning job whose adapter is
then uploaded, served and deleted, plus one problem answer per status the
spec lists for common failures.  Each answer must have a status the spec
documents for that operation, a Content-Type the spec gives for that
status, and a JSON body (when JSON) valid against the spec's schema
(jsonschema, draft 2020-12, with the spec's components).  Every operation in
the spec must have been called: a route added to the spec without a test
fails here, as does a test of a route the spec lacks.

usage: tests/openapi/conformance.py [--build DIR]
"""
import argparse
import http.client
import json
import os
import re
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import time
import zlib

import jsonschema
import yaml
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools"))
from multipart_form import multipart  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
failures = []
called = set()


def png(w, h, pixel):
    """An 8-bit RGB PNG whose pixel (x, y) is pixel(x, y)."""
    raw = b"".join(b"\0" + b"".join(bytes(pixel(x, y)) for x in range(w)) for y in range(h))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


class Spec:
    def __init__(self, path):
        self.doc = yaml.safe_load(open(path))
        self.paths = self.doc["paths"]

    def operation(self, template, method):
        return self.paths[template][method.lower()]

    def resolve(self, node):
        while isinstance(node, dict) and "$ref" in node:
            ref = node["$ref"]
            node = self.doc
            for part in ref.lstrip("#/").split("/"):
                node = node[part]
        return node

    def check(self, template, method, status, ctype, body, what):
        """The answer is documented: its status, media type and JSON schema."""
        called.add((template, method.lower()))
        op = self.operation(template, method)
        responses = op["responses"]
        documented = responses.get(str(status))
        if documented is None:
            failures.append(f"{what}: status {status} is not documented for {method} {template} "
                            f"(documented: {', '.join(sorted(responses))})")
            return
        documented = self.resolve(documented)
        content = documented.get("content")
        media = (ctype or "").split(";")[0].strip()
        if not content:
            if body:
                failures.append(f"{what}: {status} has a body ({media}) but the spec gives none")
            return
        if media not in content and f"{media.split('/')[0]}/*" not in content and "*/*" not in content:
            failures.append(f"{what}: {status} is {media or 'untyped'}; the spec allows {', '.join(content)}")
            return
        schema = content.get(media, {}).get("schema")
        if schema and "json" in media:
            full = dict(schema)
            full["components"] = self.doc["components"]
            try:
                jsonschema.validate(json.loads(body), full, cls=jsonschema.Draft202012Validator)
            except (jsonschema.ValidationError, json.JSONDecodeError) as e:
                failures.append(f"{what}: body does not match the spec: {str(e).splitlines()[0]}")


class Server:
    def __init__(self, build, tmp):
        self.token = secrets.token_hex(16)
        subprocess.run([f"{build}/e2gan", "init", "--ngf", "8", "--concepts", "winter,oil-paint", "--seed", "1",
                        "--out", f"{tmp}/base.safetensors"], check=True, capture_output=True)
        os.mkdir(f"{tmp}/adapters")
        self.log = open(f"{tmp}/server.log", "w")
        self.proc = subprocess.Popen(
            [f"{build}/e2gan-server", "--model", f"{tmp}/base.safetensors", "--adapters", f"{tmp}/adapters",
             "--jobs-dir", f"{tmp}/jobs", "--listen", "127.0.0.1:0", "--static-dir", f"{ROOT}/static",
             "--openapi", f"{ROOT}/openapi.yaml", "--admin-token", self.token, "--threads", "1",
             "--cors-origins", "http://localhost:3000"], stderr=self.log)
        self.port = None
        for _ in range(400):
            time.sleep(0.05)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(f"{tmp}/server.log").read())
            if m and self.request("GET", "/readyz", port=int(m.group(1)))[0] == 200:
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
        sys.exit("conformance: the server did not start:\n" + open(f"{tmp}/server.log").read())

    def request(self, method, path, body=None, headers=None, admin=False, port=None):
        headers = dict(headers or {})
        if admin:
            headers["Authorization"] = f"Bearer {self.token}"
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            return r.status, r.getheader("Content-Type"), r.read()
        except OSError:
            return 0, None, b""

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    args = ap.parse_args()
    spec = Spec(os.path.join(ROOT, "openapi.yaml"))
    photo = png(40, 24, lambda x, y: (x * 6, y * 10, (x + y) * 3))
    pairs = []
    for k in range(3):
        pairs.append(("file", f"p{k}.src.png", png(32, 32, lambda x, y, k=k: (x * 8, y * 8, k * 80))))
        pairs.append(("file", f"p{k}.dst.png", png(32, 32, lambda x, y, k=k: (255 - x * 8, 255 - y * 8, k * 80))))

    with tempfile.TemporaryDirectory() as tmp:
        srv = Server(args.build, tmp)
        try:
            def call(template, method, path, what, **kw):
                status, ctype, body = srv.request(method, path, **kw)
                spec.check(template, method, status, ctype, body, what)
                return status, body

            # operations and web
            call("/healthz", "GET", "/healthz", "healthz")
            call("/readyz", "GET", "/readyz", "readyz")
            call("/metrics", "GET", "/metrics", "metrics")
            call("/openapi.yaml", "GET", "/openapi.yaml", "openapi")
            call("/", "GET", "/", "index")
            call("/{path}", "GET", "/style.css", "static file")
            call("/{path}", "GET", "/no-such-file.css", "missing static file")
            # edits
            call("/v1/edits", "POST", "/v1/edits?concept=winter&format=png", "edit", body=photo,
                 headers={"Content-Type": "image/png"})
            body, ctype = multipart({"concept": "oil-paint:0.5,winter:0.5"}, [("image", "x.png", photo)])
            call("/v1/edits", "POST", "/v1/edits", "multipart blend edit", body=body, headers={"Content-Type": ctype})
            call("/v1/edits", "POST", "/v1/edits?concept=nope", "unknown concept", body=photo,
                 headers={"Content-Type": "image/png"})
            call("/v1/edits", "POST", "/v1/edits?concept=winter", "not an image", body=b"hello",
                 headers={"Content-Type": "image/png"})
            call("/v1/edits", "POST", "/v1/edits?concept=winter", "wrong type", body=b"{}",
                 headers={"Content-Type": "application/json"})
            call("/v1/edits", "OPTIONS", "/v1/edits", "preflight",
                 headers={"Origin": "http://localhost:3000", "Access-Control-Request-Method": "POST"})
            # concepts
            call("/v1/concepts", "GET", "/v1/concepts", "concepts")
            call("/v1/concepts", "OPTIONS", "/v1/concepts", "concepts preflight")
            call("/v1/concepts/{name}", "GET", "/v1/concepts/winter", "concept")
            call("/v1/concepts/{name}", "GET", "/v1/concepts/nope", "unknown concept")
            call("/v1/concepts/{name}", "OPTIONS", "/v1/concepts/winter", "concept preflight")
            call("/v1/concepts/{name}", "PUT", "/v1/concepts/x", "no token", body=b"x",
                 headers={"Content-Type": "application/octet-stream"})
            call("/v1/concepts/{name}", "PUT", "/v1/concepts/x", "not an adapter", body=b"x" * 64, admin=True,
                 headers={"Content-Type": "application/octet-stream"})
            # a fine-tuning job makes the adapter that the concept routes then carry
            body, ctype = multipart({"concept": "inky", "steps": 8, "batch": 2, "crop": 32, "train_crops": 16,
                                     "eval_every": 4}, pairs)
            status, job = call("/v1/finetunes", "POST", "/v1/finetunes", "start a job", body=body,
                               headers={"Content-Type": ctype}, admin=True)
            job_id = json.loads(job)["id"] if status == 202 else "ft-missing"
            call("/v1/finetunes", "POST", "/v1/finetunes", "job without pairs",
                 body=multipart({"concept": "x"}, [])[0], headers={"Content-Type": multipart({}, [])[1]},
                 admin=True)
            status, events = call("/v1/finetunes/{id}/events", "GET", f"/v1/finetunes/{job_id}/events",
                                  "job events", admin=True)
            if b'"state":"succeeded"' not in events:
                failures.append(f"the job did not succeed: {events[-400:]!r}")
            call("/v1/finetunes/{id}", "GET", f"/v1/finetunes/{job_id}", "job", admin=True)
            call("/v1/finetunes/{id}", "GET", "/v1/finetunes/ft-0", "unknown job", admin=True)
            call("/v1/finetunes/{id}/events", "GET", "/v1/finetunes/ft-0/events", "unknown job events", admin=True)
            call("/v1/finetunes", "GET", "/v1/finetunes", "jobs", admin=True)
            call("/v1/finetunes", "GET", "/v1/finetunes", "jobs without token")
            adapter = open(f"{tmp}/jobs/{job_id}/adapter.safetensors", "rb").read() \
                if os.path.exists(f"{tmp}/jobs/{job_id}/adapter.safetensors") else b""
            call("/v1/concepts/{name}", "PUT", "/v1/concepts/inky-copy", "upload", body=adapter, admin=True,
                 headers={"Content-Type": "application/octet-stream"})
            call("/v1/concepts/{name}", "PUT", "/v1/concepts/inky-copy", "replace", body=adapter, admin=True,
                 headers={"Content-Type": "application/octet-stream"})
            call("/v1/concepts/{name}", "DELETE", "/v1/concepts/inky-copy", "delete", admin=True)
            call("/v1/concepts/{name}", "DELETE", "/v1/concepts/inky-copy", "delete again", admin=True)
            call("/v1/finetunes/{id}", "DELETE", f"/v1/finetunes/{job_id}", "remove the job", admin=True)
            body, ctype = multipart({"concept": "long", "steps": 100000, "crop": 32, "train_crops": 16,
                                     "rank_search": "false"}, pairs)
            status, job = call("/v1/finetunes", "POST", "/v1/finetunes", "a long job", body=body,
                               headers={"Content-Type": ctype}, admin=True)
            long_id = json.loads(job)["id"] if status == 202 else "ft-missing"
            call("/v1/finetunes/{id}", "DELETE", f"/v1/finetunes/{long_id}", "cancel the job", admin=True)
        finally:
            srv.stop()

    documented = {(p, m) for p, ops in spec.paths.items() for m in ops if m in
                  ("get", "put", "post", "delete", "options", "patch", "head")}
    for p, m in sorted(documented - called):
        failures.append(f"{m.upper()} {p} is in the spec but was not called")
    for f in failures:
        print("FAIL", f)
    print(f"{len(called)} operations called, {len(failures)} failures")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
