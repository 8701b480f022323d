#!/usr/bin/python3
"""deploy_check.py — the deployment files (docker/), checked without a
container engine or a cluster (ctest deploy_files): every YAML file parses;
every E2GAN_* variable they set is an option of the built e2gan-server
(its --help), so a renamed option cannot silently stop working; the
Dockerfiles are multi-stage, install every library tools/setup.sh builds
with, and end as a non-root user with a HEALTHCHECK and e2gan-server as
entry point; compose and Kubernetes share the adapter volume between the
replicas and the one fine-tuning worker, probe /readyz and /healthz and
give the serving pods a GPU; docker/nginx/nginx.conf passes `nginx -t`
with Debian's nginx (after dropping `resolve`, which needs nginx 1.27.3).

usage: deploy_check.py BUILD_DIR"""
import os
import re
import subprocess
import sys
import tempfile

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOCKER = os.path.join(ROOT, "docker")
ADAPTERS = "/var/lib/e2gan/adapters"
# E2GAN_* names that are not server options: the engine's device choice
# (docs/cuda.md) and compose's image choice (never passed to a container).
NOT_OPTIONS = {"E2GAN_DEVICE", "E2GAN_IMAGE"}
failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def server_options(build):
    out = subprocess.run([os.path.join(build, "e2gan-server"), "--help"], capture_output=True,
                         text=True, check=True).stdout
    return set(re.findall(r"E2GAN_[A-Z0-9_]+", out))


def deploy_files():
    for folder, _, names in os.walk(DOCKER):
        for name in sorted(names):
            yield os.path.join(folder, name)


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def check_dockerfile(path, setup_libs):
    name = os.path.relpath(path, ROOT)
    text = read(path)
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    final = stages[-1] if stages else ""
    check(len(stages) >= 2, f"{name}: multi-stage ({len(stages)} stages)")
    missing = [p for p in setup_libs if p not in text]
    check(not missing, f"{name}: installs every library tools/setup.sh builds with {missing or ''}")
    user = re.findall(r"^USER (\S+)", final, flags=re.M)
    check(bool(user) and user[-1] not in ("root", "0"), f"{name}: final stage runs as {user}")
    check(re.search(r"^HEALTHCHECK .*CMD", final, flags=re.M) is not None, f"{name}: HEALTHCHECK")
    check('ENTRYPOINT ["e2gan-server"]' in final, f"{name}: ENTRYPOINT e2gan-server")
    for src in re.findall(r"^COPY (?!--from)(?:--\S+ )*(\S+) ", text, flags=re.M):
        check(os.path.exists(os.path.join(ROOT, src)), f"{name}: COPY source {src} exists")


def check_compose(compose):
    services = compose["services"]
    for svc in ("e2gan", "e2gan-worker"):
        s = services[svc]
        vols = s.get("volumes", [])
        check(f"adapters:{ADAPTERS}" in vols, f"compose: {svc} mounts the shared adapter volume")
    check(services["e2gan"]["environment"].get("E2GAN_FINETUNE") == "off" and
          services["e2gan-worker"]["environment"].get("E2GAN_FINETUNE") == "on",
          "compose: only e2gan-worker runs fine-tuning jobs")
    check(services["e2gan"]["deploy"]["replicas"] >= 2, "compose: several serving replicas")
    for vol in services["nginx"]["volumes"]:
        src = vol.split(":")[0]
        check(os.path.exists(os.path.join(DOCKER, src)), f"compose: nginx mounts {src}, which exists")


def check_k8s(docs):
    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    pvc = by_kind["PersistentVolumeClaim"]["e2gan-adapters"]
    check(pvc["spec"]["accessModes"] == ["ReadWriteMany"], "k8s: the adapter volume is ReadWriteMany")
    deployments = by_kind["Deployment"]
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        c = pod["containers"][0]
        check(c["readinessProbe"]["httpGet"]["path"] == "/readyz", f"k8s: {name} readiness probe on /readyz")
        check(c["livenessProbe"]["httpGet"]["path"] == "/healthz", f"k8s: {name} liveness probe on /healthz")
        check(pod["securityContext"].get("runAsNonRoot") is True, f"k8s: {name} runs as non-root")
        claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]}
        mounts = {m["mountPath"]: claims.get(m["name"]) for m in c["volumeMounts"]}
        check(mounts.get(ADAPTERS) == "e2gan-adapters", f"k8s: {name} mounts e2gan-adapters at {ADAPTERS}")
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in c["env"] if "valueFrom" in e]
        check(refs == ["e2gan-admin"], f"k8s: {name} takes the admin token from Secret e2gan-admin")
    server, worker = deployments["e2gan"], deployments["e2gan-worker"]
    sc = server["spec"]["template"]["spec"]["containers"][0]
    wc = worker["spec"]["template"]["spec"]["containers"][0]
    check(sc["resources"]["limits"].get("nvidia.com/gpu") == 1, "k8s: a serving pod has one GPU")
    check(env_of(sc).get("E2GAN_FINETUNE") == "off" and env_of(wc).get("E2GAN_FINETUNE") == "on",
          "k8s: only the worker runs fine-tuning jobs")
    check(worker["spec"]["replicas"] == 1 and worker["spec"]["strategy"]["type"] == "Recreate",
          "k8s: one worker, never two at once (Recreate)")
    selectors = {name: s["spec"]["selector"] for name, s in by_kind["Service"].items()}
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        check(any(all(labels.get(k) == v for k, v in sel.items()) for sel in selectors.values()),
              f"k8s: a Service selects {name}'s pods")
    backends = {p["path"]: p["backend"]["service"]["name"] for ing in by_kind["Ingress"].values()
                for rule in ing["spec"]["rules"] for p in rule["http"]["paths"]}
    check(backends == {"/": "e2gan", "/v1/finetunes": "e2gan-worker"},
          f"k8s: ingress routes / to e2gan and /v1/finetunes to e2gan-worker {backends}")


def check_nginx():
    nginx = next((p for p in ("/usr/sbin/nginx", "/usr/bin/nginx") if os.path.exists(p)), None)
    if not nginx:
        check(False, "nginx -t: Debian's nginx is missing (tools/setup.sh installs it)")
        return
    conf = read(os.path.join(DOCKER, "nginx", "nginx.conf"))
    conf = re.sub(r"^\s*resolver .*$", "", conf, flags=re.M).replace(" resolve", "")
    conf = re.sub(r"server e2gan(-worker)?:8080", "server 127.0.0.1:8080", conf)
    conf = conf.replace("/etc/nginx/e2gan-locations.conf", os.path.join(DOCKER, "nginx", "e2gan-locations.conf"))
    with tempfile.TemporaryDirectory() as tmp:
        conf = conf.replace("/tmp/nginx.pid", os.path.join(tmp, "nginx.pid")).replace(
            "http {", "http {\n" + "".join(f"    {k}_temp_path {tmp}/{k};\n" for k in
                                          ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")), 1)
        path = os.path.join(tmp, "nginx.conf")
        with open(path, "w", encoding="utf-8") as f:
            f.write(conf)
        r = subprocess.run([nginx, "-t", "-p", tmp, "-c", path, "-e", os.path.join(tmp, "error.log")],
                           capture_output=True, text=True)
        check(r.returncode == 0, "nginx -t docker/nginx/nginx.conf " + r.stderr.strip().replace("\n", " | "))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    options = server_options(sys.argv[1])
    # the libraries the build needs: setup.sh's -dev packages, less those on
    # lines marked as for the tests only (the fuzz build's clang runtimes)
    setup = [line for line in read(os.path.join(ROOT, "tools", "setup.sh")).splitlines()
             if not re.search(r"#\s*tests\b", line)]
    setup_libs = sorted(set(re.findall(r"\blib[a-z0-9.+-]*-dev\b", "\n".join(setup))))
    parsed = {}
    for path in deploy_files():
        name = os.path.relpath(path, ROOT)
        text = read(path)
        if path.endswith(".yaml"):
            try:
                parsed[name] = list(yaml.safe_load_all(text))
                check(True, f"{name}: YAML parses")
            except yaml.YAMLError as e:
                check(False, f"{name}: {e}")
        variables = set(re.findall(r"\bE2GAN_[A-Z0-9_]+", text)) - NOT_OPTIONS
        if variables:
            unknown = sorted(variables - options)
            check(not unknown, f"{name}: every E2GAN_* variable is a server option {unknown or ''}")
        if os.path.basename(path).startswith("Dockerfile."):
            check_dockerfile(path, setup_libs)
    check_compose(parsed["docker/compose.yaml"][0])
    check_k8s([d for name, docs in parsed.items() if name.startswith("docker/k8s/") for d in docs
               if d and "metadata" in d])
    check_nginx()
    print(f"deploy_check: {len(failures)} failed" if failures else "deploy_check: all passed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
