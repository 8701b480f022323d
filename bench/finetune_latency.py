#!/usr/bin/env python3
"""Edit latency while a fine-tuning job runs (the check that a job on a
CPU-only machine does not starve serving).

Starts build/e2gan-server on the shipped model (all cores for serving, the
job at its defaults: 1 thread, nice 19), measures N sequential 256x256 JPEG
edits from one keep-alive client with no job, then starts a fine-tuning job
(pairs from build/dataset, concept --concept) and measures N more while it
trains; prints p50/p99 of both and the job's step rate, and writes
bench/results/finetune-latency-DATE-COMMIT.md.

usage: /usr/bin/python3 bench/finetune_latency.py [--edits N (400)] [--concept cartoon]
       [--finetune-threads T] [--finetune-nice N] [--no-write]
"""
import argparse
import datetime
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from multipart_form import multipart  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-admin-token-" + uuid.uuid4().hex


def start_server(tmp, args):
    log = open(os.path.join(tmp, "server.log"), "w")
    cmd = [os.path.join(ROOT, "build/e2gan-server"), "--model", os.path.join(ROOT, "models/e2gan-s.safetensors"),
           "--adapters", os.path.join(tmp, "adapters"), "--jobs-dir", os.path.join(tmp, "jobs"),
           "--listen", "127.0.0.1:0", "--admin-token", TOKEN,
           "--finetune-threads", str(args.finetune_threads), "--finetune-nice", str(args.finetune_nice)]
    proc = subprocess.Popen(cmd, stderr=log, cwd=ROOT)
    for _ in range(600):
        time.sleep(0.05)
        text = open(log.name).read()
        m = re.search(r"listening on 127\.0\.0\.1:(\d+)", text)
        if m:
            port = int(m.group(1))
            for _ in range(600):
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                    c.request("GET", "/readyz")
                    if c.getresponse().status == 200:
                        return proc, port
                except OSError:
                    pass
                time.sleep(0.05)
        if proc.poll() is not None:
            break
    sys.exit("finetune_latency: the server did not start:\n" + open(log.name).read())


def test_image():
    """A 256x256 JPEG of the test photo (resized by the e2gan CLI's own decoder path: ImageMagick)."""
    out = subprocess.run(["convert", os.path.join(ROOT, "tests/data/chelsea.png"), "-resize", "256x256!",
                          "-quality", "90", "jpeg:-"], check=True, capture_output=True).stdout
    return out


def measure(port, image, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    times = []
    for i in range(n + 3):
        t0 = time.perf_counter()
        conn.request("POST", "/v1/edits?concept=winter", body=image, headers={"Content-Type": "image/jpeg"})
        r = conn.getresponse()
        r.read()
        if r.status != 200:
            sys.exit(f"finetune_latency: edit answered {r.status}")
        if i >= 3:  # warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    times.sort()
    return {"p50": statistics.median(times), "p99": times[min(len(times) - 1, int(0.99 * len(times)))],
            "mean": statistics.fmean(times), "n": n}


def admin(port, method, path, body=None, ctype=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if ctype:
        headers["Content-Type"] = ctype
    conn.request(method, path, body=body, headers=headers)
    r = conn.getresponse()
    data = r.read()
    return r.status, json.loads(data) if data else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edits", type=int, default=400)
    ap.add_argument("--concept", default="cartoon")
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--finetune-threads", type=int, default=1)
    ap.add_argument("--finetune-nice", type=int, default=19)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    data = os.path.join(ROOT, "build/dataset/train")
    if not os.path.isdir(os.path.join(data, args.concept)):
        sys.exit(f"finetune_latency: no {data}/{args.concept}; run tools/make_dataset.py first")
    ids = sorted(os.listdir(os.path.join(data, args.concept)))[: args.pairs]
    files = []
    for i in ids:
        stem = os.path.splitext(i)[0]
        files.append(("file", f"{stem}.src.png", open(os.path.join(data, "src", i), "rb").read()))
        files.append(("file", f"{stem}.dst.png", open(os.path.join(data, args.concept, i), "rb").read()))

    with tempfile.TemporaryDirectory() as tmp:
        os.mkdir(os.path.join(tmp, "adapters"))
        proc, port = start_server(tmp, args)
        try:
            image = test_image()
            idle = measure(port, image, args.edits)
            body, ctype = multipart({"concept": "bench-" + args.concept, "steps": 100000,
                                     "rank_search": "false"}, files)
            status, job = admin(port, "POST", "/v1/finetunes", body, ctype)
            if status != 202:
                sys.exit(f"finetune_latency: POST /v1/finetunes answered {status}: {job}")
            for _ in range(1200):  # until the trainer is past its start-up
                _, job = admin(port, "GET", f"/v1/finetunes/{job['id']}")
                if job["state"] == "running" and job["progress"].get("step", 0) >= 10:
                    break
                if job["state"] not in ("queued", "running"):
                    sys.exit(f"finetune_latency: the job ended: {job}")
                time.sleep(0.1)
            step0, t0 = job["progress"]["step"], time.time()
            busy = measure(port, image, args.edits)
            _, job = admin(port, "GET", f"/v1/finetunes/{job['id']}")
            job_rate = (job["progress"]["step"] - step0) / (time.time() - t0)
            admin(port, "DELETE", f"/v1/finetunes/{job['id']}")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    cpu = re.search(r"model name\s*:\s*(.*)", open("/proc/cpuinfo").read()).group(1)
    date = datetime.date.today().isoformat()
    table = (f"| | p50 ms | p99 ms | mean ms |\n|---|---|---|---|\n"
             f"| no job | {idle['p50']:.1f} | {idle['p99']:.1f} | {idle['mean']:.1f} |\n"
             f"| job running | {busy['p50']:.1f} | {busy['p99']:.1f} | {busy['mean']:.1f} |\n"
             f"| ratio | {busy['p50'] / idle['p50']:.2f} | {busy['p99'] / idle['p99']:.2f} | "
             f"{busy['mean'] / idle['mean']:.2f} |\n")
    report = (f"# Edit latency while a fine-tuning job runs\n\n"
              f"Machine: {cpu}, {os.cpu_count()} cores. Date {date}, commit {commit}.\n"
              f"`bench/finetune_latency.py --edits {args.edits} --concept {args.concept}`: one keep-alive client, "
              f"sequential 256x256 JPEG edits (concept winter, shipped e2gan-s), server on all cores; the job "
              f"fine-tunes `{args.concept}` on {len(ids)} pairs with {args.finetune_threads} thread(s) at nice "
              f"{args.finetune_nice}.\n\n{table}\n"
              f"The job trained at {job_rate:.2f} steps/s (batch 8, 128² crops) while the edits ran "
              f"(its progress is logged every 10 steps).\n")
    print(report)
    if not args.no_write:
        path = os.path.join(ROOT, f"bench/results/finetune-latency-{date.replace('-', '')}-{commit}.md")
        open(path, "w").write(report)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
