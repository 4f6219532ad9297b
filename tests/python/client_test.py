"""The official Python `kubernetes` client against k3rs-apiserver.

Run by tests/tests/apiserver_python.rs with KUBECONFIG pointing at a fresh
cluster; exits non-zero with a message on the first mismatch.
"""
import json
import os
import sys

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException


def expect_error(status, reason, fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ApiException as e:
        body = json.loads(e.body)
        assert e.status == status, (e.status, e.body)
        assert body["kind"] == "Status" and body["reason"] == reason, e.body
        return body
    raise AssertionError(f"expected {status} {reason}")


def main():
    config.load_kube_config(os.environ["KUBECONFIG"])
    v1 = client.CoreV1Api()
    apps = client.AppsV1Api()
    ns = "default"

    # CRUD, with the errors clients switch on.
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="py-cm", labels={"app": "py"}), data={"a": "1"}
    )
    created = v1.create_namespaced_config_map(ns, cm)
    assert created.metadata.uid and created.metadata.resource_version, created
    expect_error(409, "AlreadyExists", v1.create_namespaced_config_map, ns, cm)
    body = expect_error(404, "NotFound", v1.read_namespaced_config_map, "nope", ns)
    assert body["details"]["name"] == "nope", body
    got = v1.read_namespaced_config_map("py-cm", ns)
    got.data["a"] = "2"
    updated = v1.replace_namespaced_config_map("py-cm", ns, got)
    assert int(updated.metadata.resource_version) > int(got.metadata.resource_version)
    got.data["a"] = "3"  # still carries the old resourceVersion
    expect_error(409, "Conflict", v1.replace_namespaced_config_map, "py-cm", ns, got)
    patched = v1.patch_namespaced_config_map("py-cm", ns, {"data": {"b": "x"}})
    assert patched.data == {"a": "2", "b": "x"}, patched.data
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Bad_Name"))
    body = expect_error(422, "Invalid", v1.create_namespaced_config_map, ns, bad)
    assert body["details"]["causes"][0]["field"] == "metadata.name", body

    # Paginated list.
    for i in range(25):
        v1.create_namespaced_config_map(
            ns,
            client.V1ConfigMap(
                metadata=client.V1ObjectMeta(name=f"page-{i:02d}", labels={"page": "yes"})
            ),
        )
    names, cont, pages = [], None, 0
    while True:
        kwargs = {"limit": 10, "label_selector": "page=yes"}
        if cont:
            kwargs["_continue"] = cont
        page = v1.list_namespaced_config_map(ns, **kwargs)
        pages += 1
        assert len(page.items) <= 10
        names += [c.metadata.name for c in page.items]
        cont = page.metadata._continue
        if not cont:
            break
    assert names == [f"page-{i:02d}" for i in range(25)], names
    assert pages == 3, pages
    expect_error(400, "BadRequest", v1.list_namespaced_config_map, ns, limit=5, _continue="garbage")

    # Watch from a resourceVersion: sees exactly what happened after it.
    rv = v1.list_namespaced_config_map(ns).metadata.resource_version
    v1.create_namespaced_config_map(ns, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="py-w")))
    v1.patch_namespaced_config_map("py-w", ns, {"data": {"k": "v"}})
    v1.delete_namespaced_config_map("py-w", ns)
    seen = []
    w = watch.Watch()
    for ev in w.stream(v1.list_namespaced_config_map, ns, resource_version=rv, timeout_seconds=10):
        seen.append((ev["type"], ev["object"].metadata.name))
        if ev["type"] == "DELETED":
            w.stop()
    assert seen == [("ADDED", "py-w"), ("MODIFIED", "py-w"), ("DELETED", "py-w")], seen

    # Defaults filled by the server.
    dep = client.V1Deployment(
        metadata=client.V1ObjectMeta(name="py-dep"),
        spec=client.V1DeploymentSpec(
            selector=client.V1LabelSelector(match_labels={"app": "py"}),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"app": "py"}),
                spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="busybox")]),
            ),
        ),
    )
    d = apps.create_namespaced_deployment(ns, dep)
    assert d.spec.replicas == 1, d.spec.replicas
    assert d.spec.strategy.type == "RollingUpdate"
    assert d.spec.strategy.rolling_update.max_surge == "25%"
    assert d.spec.template.spec.restart_policy == "Always"
    assert d.spec.template.spec.dns_policy == "ClusterFirst"
    assert d.spec.template.spec.containers[0].image_pull_policy == "Always"
    assert d.metadata.generation == 1
    scale = apps.read_namespaced_deployment_scale("py-dep", ns)
    assert scale.spec.replicas == 1
    apps.patch_namespaced_deployment_scale("py-dep", ns, {"spec": {"replicas": 3}})
    assert apps.read_namespaced_deployment("py-dep", ns).spec.replicas == 3
    apps.delete_namespaced_deployment("py-dep", ns)
    expect_error(404, "NotFound", apps.read_namespaced_deployment, "py-dep", ns)

    nss = [n.metadata.name for n in v1.list_namespace().items]
    for want in ["default", "kube-system", "kube-public", "kube-node-lease"]:
        assert want in nss, nss
    print("python client: ok")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"assertion failed: {e!r}", file=sys.stderr)
        raise
