#!/usr/bin/env python3
"""Regenerates the kubectl payload pairs in this directory.

    python3 apimachinery/src/protobuf/testdata/kubectl/capture.py [kubectl]

For each command it runs `kubectl <command>` against a tiny fake API server
(plain HTTP on 127.0.0.1, stdlib only) that records the protobuf request
body as <name>.pb, then runs the same command with `--dry-run=client -o json`
and stores kubectl's own (Go encoding/json) rendering of that object as
<name>.json. Commands without client dry-run (token, auth can-i) get a
hand-written .json (see EXPECTED). The decoder must turn each .pb into
exactly its .json.
"""

import http.server
import json
import os
import subprocess
import sys
import threading

HERE = os.path.dirname(os.path.abspath(__file__))
KUBECTL = sys.argv[1] if len(sys.argv) > 1 else "kubectl"

COMMANDS = {
    "configmap": ["create", "configmap", "cm1", "--from-literal=a=b", "--from-file=bin={bin}"],
    "secret": ["create", "secret", "generic", "s1", "--from-literal=password=hunter2", "--type=Opaque"],
    "secret-docker": ["create", "secret", "docker-registry", "reg", "--docker-server=x.io",
                      "--docker-username=u", "--docker-password=p"],
    "deployment": ["create", "deployment", "web", "--image=nginx", "--replicas=0"],
    "deployment2": ["create", "deployment", "web2", "--image=nginx", "--image=redis", "--port=80", "-r", "3"],
    "job": ["create", "job", "j1", "--image=busybox", "{dry}", "--", "echo", "hi"],
    "cronjob": ["create", "cronjob", "cj", "--image=busybox", "--schedule=*/1 * * * *", "{dry}", "--", "date"],
    "service": ["create", "service", "clusterip", "web", "--tcp=80:8080", "--tcp=443:8443"],
    "service-np": ["create", "service", "nodeport", "np", "--tcp=80:8080", "--node-port=30080"],
    "service-ext": ["create", "service", "externalname", "ext", "--external-name=example.com"],
    "namespace": ["create", "namespace", "ns1"],
    "quota": ["create", "quota", "q1", "--hard=cpu=1,memory=1Gi,pods=10"],
    "role": ["create", "role", "r1", "--verb=get,list", "--resource=pods,deployments.apps"],
    "rolebinding": ["create", "rolebinding", "rb1", "--role=r1", "--user=alice", "--serviceaccount=default:sa1"],
    "clusterrole": ["create", "clusterrole", "cr1", "--verb=get", "--non-resource-url=/healthz"],
    "clusterrole-agg": ["create", "clusterrole", "agg", "--aggregation-rule=rbac.example.com/aggregate=true"],
    "clusterrolebinding": ["create", "clusterrolebinding", "crb1", "--clusterrole=cr1", "--group=devs"],
    "serviceaccount": ["create", "serviceaccount", "sa1"],
    "priorityclass": ["create", "priorityclass", "pc1", "--value=1000", "--description=d",
                      "--preemption-policy=Never"],
    "pdb": ["create", "poddisruptionbudget", "pdb1", "--selector=app=web", "--min-available=1"],
    "pdb2": ["create", "pdb", "pdb2", "--selector=app=web", "--max-unavailable=50%"],
    "ingress": ["create", "ingress", "ing1", "--rule=foo.com/bar=svc1:8080,tls=my-cert", "--class=nginx"],
    "ingress2": ["create", "ingress", "ing2", "--default-backend=svc2:http", "--rule=/path*=svc3:https"],
    "token": ["create", "token", "sa1", "--audience=api", "--audience=vault", "--duration=1h"],
    "cani": ["auth", "can-i", "create", "pods"],
    "cani-nonres": ["auth", "can-i", "get", "/healthz"],
}

# Go's encoding/json of the objects kubectl builds for commands that cannot
# print them (no --dry-run).
EXPECTED = {
    "token": {"kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
              "metadata": {"creationTimestamp": None},
              "spec": {"audiences": ["api", "vault"], "expirationSeconds": 3600, "boundObjectRef": None},
              "status": {"token": "", "expirationTimestamp": None}},
    "cani": {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
             "metadata": {"creationTimestamp": None},
             "spec": {"resourceAttributes": {"namespace": "default", "verb": "create", "resource": "pods"}},
             "status": {"allowed": False}},
    "cani-nonres": {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
                    "metadata": {"creationTimestamp": None},
                    "spec": {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}},
                    "status": {"allowed": False}},
}

DISCOVERY = {
    "/api": {"kind": "APIVersions", "versions": ["v1"],
             "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}]},
    "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod", "verbs": ["create", "get"]}]},
    "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
        {"name": "apps", "versions": [{"groupVersion": "apps/v1", "version": "v1"}],
         "preferredVersion": {"groupVersion": "apps/v1", "version": "v1"}}]},
    "/apis/apps/v1": {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1", "resources": [
        {"name": "deployments", "singularName": "deployment", "namespaced": True, "kind": "Deployment",
         "verbs": ["create", "get"]}]},
    "/version": {"major": "1", "minor": "33", "gitVersion": "v1.33.0"},
}

RESPONSE_KINDS = {
    "configmaps": ("v1", "ConfigMap"), "secrets": ("v1", "Secret"), "services": ("v1", "Service"),
    "namespaces": ("v1", "Namespace"), "serviceaccounts": ("v1", "ServiceAccount"),
    "resourcequotas": ("v1", "ResourceQuota"), "deployments": ("apps/v1", "Deployment"),
    "jobs": ("batch/v1", "Job"), "cronjobs": ("batch/v1", "CronJob"),
    "roles": ("rbac.authorization.k8s.io/v1", "Role"),
    "rolebindings": ("rbac.authorization.k8s.io/v1", "RoleBinding"),
    "clusterroles": ("rbac.authorization.k8s.io/v1", "ClusterRole"),
    "clusterrolebindings": ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
    "priorityclasses": ("scheduling.k8s.io/v1", "PriorityClass"),
    "poddisruptionbudgets": ("policy/v1", "PodDisruptionBudget"),
    "ingresses": ("networking.k8s.io/v1", "Ingress"),
    "token": ("authentication.k8s.io/v1", "TokenRequest"),
    "selfsubjectaccessreviews": ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
}

captured = {}


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path in DISCOVERY:
            return self.reply(200, DISCOVERY[path])
        self.reply(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404})

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        captured["body"] = body
        captured["type"] = self.headers.get("Content-Type")
        # Enough of an object for kubectl to print its result line.
        resource = self.path.split("?")[0].rstrip("/").split("/")[-1]
        api_version, kind = RESPONSE_KINDS[resource]
        obj = {"kind": kind, "apiVersion": api_version, "metadata": {"name": "x"}}
        if kind == "SelfSubjectAccessReview":
            obj["status"] = {"allowed": True}
        if kind == "TokenRequest":
            obj["status"] = {"token": "t", "expirationTimestamp": "2030-01-01T00:00:00Z"}
        self.reply(201, obj)


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = [KUBECTL, f"--server=http://127.0.0.1:{server.server_port}", "-n", "default"]
    env = dict(os.environ, KUBECONFIG=os.devnull)
    binfile = os.path.join(HERE, ".bin.tmp")
    with open(binfile, "wb") as f:
        f.write(b"\x00\x01\x02\xff")
    try:
        for name, cmd in COMMANDS.items():
            cmd = [c.replace("{bin}", binfile) for c in cmd]
            captured.clear()
            run = subprocess.run(base + [c for c in cmd if c != "{dry}"], env=env,
                                 capture_output=True, text=True)
            if run.returncode != 0:
                sys.exit(f"{name}: kubectl failed: {run.stderr.strip()}")
            if captured.get("type") != "application/vnd.kubernetes.protobuf":
                sys.exit(f"{name}: kubectl sent {captured.get('type')}, not protobuf")
            with open(os.path.join(HERE, f"{name}.pb"), "wb") as f:
                f.write(captured["body"])
            if name in EXPECTED:
                text = json.dumps(EXPECTED[name], indent=2) + "\n"
            else:
                dry = ["--dry-run=client", "-o", "json"]
                if "{dry}" in cmd:
                    i = cmd.index("{dry}")
                    full = cmd[:i] + dry + cmd[i + 1:]
                else:
                    full = cmd + dry
                text = subprocess.run(base + full, env=env, check=True, capture_output=True,
                                      text=True).stdout
            with open(os.path.join(HERE, f"{name}.json"), "w") as f:
                f.write(text)
            print(f"{name}: {len(captured['body'])} bytes")
    finally:
        os.unlink(binfile)
        server.shutdown()


if __name__ == "__main__":
    main()
