#!/usr/bin/env python3
"""Soak test of e2gan-server: a mixed load on loopback for DURATION seconds.

Starts build/e2gan-server on the shipped model with a copy of its adapters,
then runs at once:
  - CLIENTS editors: POST /v1/edits round robin over every concept the server
    lists (base concepts, adapters, and two-concept blends), 128x128 JPEG;
  - one admin client: PUT /v1/concepts/soak-N (a shipped adapter's bytes), an
    edit with it, DELETE, over and over;
  - one fine-tuning job (POST /v1/finetunes, four pairs cropped from the test
    photo and their colour inversion), started once warm-up is over;
  - a sampler: the server's RSS, open fds and threads every SAMPLE seconds.

Designed answers are not errors: 503 (queue full, request timeout) and, for the
concept being uploaded and deleted, 404 when an editor races the delete.
Anything else is.  The verdict: no errors, RSS after warm-up within
RSS_SLACK (10%) of its first post-warm-up value, fds back to their
post-warm-up count once idle, the job not failed, a clean exit on SIGTERM.
Prints the RSS curve and writes bench/results/soak-DATE-COMMIT.md.

usage: DURATION=600 /usr/bin/python3 bench/soak.py [--duration S] [--warmup S]
       [--clients N] [--sample S] [--no-write]
Environment: DURATION, WARMUP, CLIENTS, E2GAN_SERVER, MODEL, ADAPTERS.
Exit status 0 when the verdict holds, 1 otherwise.
"""
import argparse
import collections
import datetime
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from multipart_form import multipart  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "soak-admin-token-" + uuid.uuid4().hex
RSS_SLACK = 0.10
CHURN = "soak-churn"


def env_int(name, default):
    return int(os.environ.get(name, default))


class Server:
    def __init__(self, tmp, binary, model, adapters):
        shutil.copytree(adapters, os.path.join(tmp, "adapters"))
        self.log_path = os.path.join(tmp, "server.log")
        log = open(self.log_path, "w")
        cmd = [binary, "--model", model, "--adapters", os.path.join(tmp, "adapters"),
               "--jobs-dir", os.path.join(tmp, "jobs"), "--listen", "127.0.0.1:0", "--admin-token", TOKEN]
        self.proc = subprocess.Popen(cmd, stderr=log, stdout=subprocess.DEVNULL, cwd=ROOT)
        self.port = None
        for _ in range(1200):
            time.sleep(0.05)
            m = re.search(r"listening on 127\.0\.0\.1:(\d+)", open(self.log_path).read())
            if m and self.ready(int(m.group(1))):
                self.port = int(m.group(1))
                return
            if self.proc.poll() is not None:
                break
        sys.exit("soak: the server did not start:\n" + open(self.log_path).read())

    @staticmethod
    def ready(port):
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/readyz")
            return c.getresponse().status == 200
        except OSError:
            return False

    def sample(self):
        """(rss MiB, open fds, threads) of the server process."""
        pid = self.proc.pid
        status = open(f"/proc/{pid}/status").read()
        rss = int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024
        threads = int(re.search(r"Threads:\s+(\d+)", status).group(1))
        return rss, len(os.listdir(f"/proc/{pid}/fd")), threads

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None


class Tally:
    """Answers by (route, status); designed ones apart from errors."""

    def __init__(self):
        self.lock = threading.Lock()
        self.counts = collections.Counter()
        self.errors = []

    def add(self, route, status, designed, detail=""):
        with self.lock:
            self.counts[(route, status)] += 1
            if not designed:
                self.errors.append(f"{route} {status} {detail[:300]}")


def request(port, method, path, body=None, headers=None, timeout=120):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    except OSError as e:
        return 0, str(e).encode()
    finally:
        conn.close()


def admin_headers(ctype=None):
    h = {"Authorization": f"Bearer {TOKEN}"}
    if ctype:
        h["Content-Type"] = ctype
    return h


def convert(*args):
    return subprocess.run(["convert", *args], check=True, capture_output=True).stdout


def concepts(port):
    status, body = request(port, "GET", "/v1/concepts")
    if status != 200:
        sys.exit(f"soak: GET /v1/concepts answered {status}")
    return [c["name"] for c in json.loads(body)["concepts"] if c["name"] != CHURN]


def editor(port, image, specs, stop, tally, k):
    i = k
    while not stop.is_set():
        spec = specs[i % len(specs)]
        i += 1
        status, body = request(port, "POST", f"/v1/edits?concept={spec}", image, {"Content-Type": "image/jpeg"})
        designed = status == 200 or status == 503 or (status == 404 and CHURN in spec)
        tally.add("edit", status, designed, f"{spec}: {body!r}")


def churner(port, adapter, image, stop, tally):
    while not stop.is_set():
        status, body = request(port, "PUT", f"/v1/concepts/{CHURN}", adapter, admin_headers("application/octet-stream"))
        tally.add("put", status, status in (200, 201), body.decode(errors="replace"))
        status, body = request(port, "POST", f"/v1/edits?concept={CHURN}", image, {"Content-Type": "image/jpeg"})
        tally.add("edit", status, status in (200, 503), body.decode(errors="replace"))
        status, body = request(port, "DELETE", f"/v1/concepts/{CHURN}", headers=admin_headers())
        tally.add("delete", status, status == 204, body.decode(errors="replace"))


def start_job(port, photo, tally):
    files = []
    for k in range(4):
        crop = ["-crop", f"96x72+{40 * k}+{30 * k}", "+repage"]
        files.append(("file", f"p{k}.src.png", convert(photo, *crop, "png:-")))
        files.append(("file", f"p{k}.dst.png", convert(photo, *crop, "-negate", "png:-")))
    body, ctype = multipart({"concept": "soak-job", "steps": "200", "batch": "2", "crop": "48",
                             "train_crops": "32", "replace": "true"}, files)
    status, data = request(port, "POST", "/v1/finetunes", body, admin_headers(ctype))
    tally.add("finetune", status, status == 202, data.decode(errors="replace"))
    return json.loads(data)["id"] if status == 202 else None


def job_state(port, job):
    status, data = request(port, "GET", f"/v1/finetunes/{job}", headers=admin_headers())
    return json.loads(data) if status == 200 else {"state": f"unreadable ({status})"}


def commit():
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=True,
                              capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=env_int("DURATION", 600))
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--clients", type=int, default=env_int("CLIENTS", 4))
    ap.add_argument("--sample", type=float, default=5.0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else env_int("WARMUP", min(60, args.duration // 5))
    binary = os.environ.get("E2GAN_SERVER", os.path.join(ROOT, "build/e2gan-server"))
    model = os.environ.get("MODEL", os.path.join(ROOT, "models/e2gan-s.safetensors"))
    adapters = os.environ.get("ADAPTERS", os.path.join(ROOT, "models/adapters"))
    photo = os.path.join(ROOT, "tests/data/chelsea.png")
    image = convert(photo, "-resize", "128x128!", "-quality", "90", "jpeg:-")
    adapter = open(os.path.join(adapters, sorted(f for f in os.listdir(adapters) if f.endswith(".safetensors"))[0]),
                   "rb").read()
    load_start = os.getloadavg()[0]

    with tempfile.TemporaryDirectory(prefix="e2g-soak-") as tmp:
        server = Server(tmp, binary, model, adapters)
        names = concepts(server.port)
        specs = names + [f"{a}:0.5,{b}:0.5" for a, b in zip(names, names[1:] + names[:1])] + [CHURN]
        tally, stop = Tally(), threading.Event()
        threads = [threading.Thread(target=editor, args=(server.port, image, specs, stop, tally, k))
                   for k in range(args.clients)]
        threads.append(threading.Thread(target=churner, args=(server.port, adapter, image, stop, tally)))
        for t in threads:
            t.start()
        print(f"soak: {args.duration}s ({warmup}s warm-up), {args.clients} editors over {len(specs)} specs, "
              f"server pid {server.proc.pid} port {server.port}", flush=True)
        t0, job, curve = time.monotonic(), None, []
        while (elapsed := time.monotonic() - t0) < args.duration:
            if job is None and elapsed >= warmup:
                job = start_job(server.port, photo, tally) or ""
            rss, fds, nthreads = server.sample()
            curve.append((elapsed, rss, fds, nthreads))
            print(f"  t={elapsed:6.0f}s rss={rss:7.1f} MiB fds={fds:4d} threads={nthreads:3d} "
                  f"answers={sum(tally.counts.values())}", flush=True)
            time.sleep(args.sample)
        stop.set()
        for t in threads:
            t.join()
        job_doc = job_state(server.port, job) if job else {"state": "not started"}
        if job_doc.get("state") in ("queued", "running"):
            request(server.port, "DELETE", f"/v1/finetunes/{job}", headers=admin_headers())
        time.sleep(2)  # the server closes the clients' connections
        idle = server.sample()
        exit_status = server.stop()

    after = [c for c in curve if c[0] >= warmup] or curve[-1:]
    rss0, rss_max, rss_end = after[0][1], max(c[1] for c in after), after[-1][1]
    fds0 = after[0][2]
    checks = {
        "no errors": not tally.errors,
        f"RSS within {RSS_SLACK:.0%} of its post-warm-up value": rss_max <= rss0 * (1 + RSS_SLACK),
        "fds back to the post-warm-up count when idle": idle[1] <= fds0,
        "the fine-tuning job did not fail": job_doc.get("state") not in ("failed", "not started"),
        "clean exit on SIGTERM": exit_status == 0,
    }
    lines = [f"# Soak: {datetime.date.today()} commit {commit()}", "",
             f"- machine: {os.cpu_count()} cores, load average {load_start:.2f} at the start",
             f"- {args.duration} s, warm-up {warmup} s, {args.clients} editors, {len(specs)} concept specs",
             f"- answers: " + ", ".join(f"{r} {s}: {n}" for (r, s), n in sorted(tally.counts.items())),
             f"- fine-tuning job: {job_doc.get('state')}, step "
             f"{(job_doc.get('progress') or {}).get('step')} of {(job_doc.get('progress') or {}).get('steps')}",
             f"- RSS after warm-up: first {rss0:.1f} MiB, max {rss_max:.1f}, last {rss_end:.1f}; "
             f"fds after warm-up {fds0}, idle at the end {idle[1]}; threads idle {idle[2]}",
             "", "| t (s) | RSS (MiB) | fds | threads |", "|---:|---:|---:|---:|"]
    lines += [f"| {t:.0f} | {rss:.1f} | {fds} | {n} |" for t, rss, fds, n in curve]
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {name} | {'pass' if ok else 'FAIL'} |" for name, ok in checks.items()]
    if tally.errors:
        lines += ["", "Errors (first 20):", ""] + [f"- {e}" for e in tally.errors[:20]]
    report = "\n".join(lines) + "\n"
    print(report)
    if not args.no_write:
        path = os.path.join(ROOT, "bench/results", f"soak-{datetime.date.today():%Y%m%d}-{commit()}.md")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        open(path, "w").write(report)
        print(f"soak: wrote {path}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
