#!/usr/bin/env python3
"""Offline validation of the Kubernetes manifests under deploy/ (`cargo xtask test --tier lint`).

Run by xtask/src/deploy_check.rs with the virtualenv that `cargo xtask setup` creates
(kubernetes-validate, jsonschema, PyYAML). Checks, in order:

1. Self-test: every fixture in --invalid DIR must be REJECTED, with an error containing the
   text of its `# expect:` line. A validator that accepts broken manifests fails here.
2. Every *.yaml/*.yml file under deploy/ (kustomization files aside), document by document:
   - built-in kinds against the real Kubernetes OpenAPI schemas of each --k8s-version, in
     strict mode (unknown fields are errors, as with `kubectl apply --validate=strict`);
   - custom resources (enforcer.dev) against the openAPIV3Schema of the CRD in deploy/,
     also strict; CRD schemas must themselves be valid JSON schemas.
3. Every kustomization under deploy/ is rendered with `kubectl kustomize` (when kubectl is
   installed; otherwise a loud note: the files were still validated one by one) and the
   output is validated the same way.
4. shellcheck on the end-to-end scripts (--shellcheck DIR), where shellcheck is installed.
5. Project rules on the agent's objects wherever they appear (files and renders): the
   ClusterRole grants exactly get/list/watch on pods, namespaces, services,
   endpointslices, networkpolicies and runtimepolicies; the namespaced Role only reads
   daemonsets (the agent's own); the DaemonSet keeps its least-privilege shape (see
   deploy/README.md).

Exit status 0 only if everything passed.
"""

import argparse
import functools
import pathlib
import re
import shutil
import subprocess
import sys

import jsonschema
import yaml
from kubernetes_validate import utils as kv

# Schemas are JSON files read from disk on every call: read each once.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)

KUSTOMIZATION_NAMES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}

# What the agent reads, and nothing else (enforcer-user's Kubernetes mode).
EXPECTED_RBAC = {
    ("", "pods"): {"get", "list", "watch"},
    ("", "namespaces"): {"get", "list", "watch"},
    ("", "services"): {"get", "list", "watch"},
    ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch"},
    ("enforcer.dev", "runtimepolicies"): {"get", "list", "watch"},
}
REQUIRED_CAPS = {"BPF", "PERFMON", "NET_ADMIN"}
# Capabilities the unprivileged DaemonSet may add (deploy/README.md says when the last two
# are needed).
ALLOWED_CAPS = REQUIRED_CAPS | {"SYS_RESOURCE", "SYS_ADMIN"}
HOST_PATHS = {"/sys/fs/bpf", "/sys/fs/cgroup", "/sys/kernel/btf", "/sys/kernel/security"}
# bpffs: pins. cgroupfs: the start-up self-test creates one throwaway child of the agent's
# own container cgroup (deploy/README.md); read-only works, with the self-test not run.
WRITABLE_HOST_PATHS = {"/sys/fs/bpf", "/sys/fs/cgroup"}

METADATA_SCHEMA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {
            "type": "string",
            "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
            "maxLength": 253,
        },
        "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


class Doc:
    def __init__(self, source, index, obj):
        self.source = source  # a file, or "kubectl kustomize DIR"
        self.index = index
        self.obj = obj

    def name(self):
        o = self.obj if isinstance(self.obj, dict) else {}
        meta = o.get("metadata") if isinstance(o.get("metadata"), dict) else {}
        ns = meta.get("namespace")
        return "%s (document %d) %s %s%s" % (
            self.source, self.index + 1, o.get("kind", "?"),
            ns + "/" if ns else "", meta.get("name", "?"))


def load_file(path):
    """Documents of a YAML file; raises ValueError on a syntax error."""
    try:
        with open(path) as f:
            objs = list(yaml.safe_load_all(f))
    except yaml.YAMLError as e:
        raise ValueError("%s: YAML syntax error: %s" % (path, e))
    return [Doc(str(path), i, o) for i, o in enumerate(objs) if o is not None]


def strict_schema(schema):
    """A copy of an OpenAPI v3 structural schema where objects with `properties` reject
    unknown fields (the API server prunes them silently; strict field validation rejects
    them, and so do we)."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if ("properties" in out and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


class Crds:
    def __init__(self):
        self.by_gvk = {}  # (group, version, kind) -> (validator, source)
        self.groups = set()

    def add(self, doc, errors):
        spec = doc.obj.get("spec") or {}
        group = spec.get("group")
        kind = (spec.get("names") or {}).get("kind")
        for v in spec.get("versions") or []:
            schema = ((v.get("schema") or {}).get("openAPIV3Schema"))
            if not isinstance(schema, dict):
                errors.append("%s: version %s has no openAPIV3Schema" % (doc.name(), v.get("name")))
                continue
            try:
                jsonschema.Draft202012Validator.check_schema(schema)
            except jsonschema.SchemaError as e:
                errors.append("%s: openAPIV3Schema is not a valid schema: %s" % (doc.name(), e.message))
                continue
            body = strict_schema(schema)
            props = dict(body.get("properties") or {})
            props.update({
                "apiVersion": {"const": "%s/%s" % (group, v.get("name"))},
                "kind": {"const": kind},
                "metadata": METADATA_SCHEMA,
            })
            full = dict(body, properties=props)
            full["required"] = sorted(set(body.get("required") or []) | {"apiVersion", "kind", "metadata"})
            full["additionalProperties"] = False
            self.by_gvk[(group, v.get("name"), kind)] = (
                jsonschema.Draft202012Validator(full), doc.source)
        self.groups.add(group)


def path_str(path):
    return "".join("[%d]" % p if isinstance(p, int) else ".%s" % p for p in path) or "."


def validate_doc(doc, crds, versions):
    """Schema errors of one document (empty list: valid)."""
    o = doc.obj
    if not isinstance(o, dict):
        return ["%s: not a mapping" % doc.name()]
    for field in ("apiVersion", "kind"):
        if not isinstance(o.get(field), str):
            return ["%s: missing or non-string %s" % (doc.name(), field)]
    if not isinstance(o.get("metadata"), dict) or not o["metadata"].get("name"):
        return ["%s: missing metadata.name" % doc.name()]
    group, _, version = o["apiVersion"].rpartition("/")
    if group in crds.groups:
        entry = crds.by_gvk.get((group, version, o["kind"]))
        if entry is None:
            return ["%s: no CRD in deploy/ serves %s %s" % (doc.name(), o["apiVersion"], o["kind"])]
        validator, crd_source = entry
        errs = sorted(validator.iter_errors(o), key=lambda e: list(e.absolute_path))
        return ["%s: %s: %s (schema from %s)" % (doc.name(), path_str(e.absolute_path), e.message, crd_source)
                for e in errs]
    out = []
    for v in versions:
        try:
            kv.validate(o, v, strict=True)
        except kv.ValidationError as e:
            out.append("%s: Kubernetes %s: %s: %s" % (doc.name(), v, path_str(e.absolute_path), e.message))
        except kv.SchemaNotFoundError as e:
            out.append("%s: %s" % (doc.name(), e.message))
    return out


# ---- project rules -------------------------------------------------------------------

def check_rbac(doc):
    o = doc.obj
    if o.get("kind") != "ClusterRole" or o["metadata"].get("name") != "enforcer":
        return []
    errs = []
    got = {}
    for rule in o.get("rules") or []:
        for extra in ("resourceNames", "nonResourceURLs"):
            if rule.get(extra):
                errs.append("%s: rules must not use %s" % (doc.name(), extra))
        for g in rule.get("apiGroups") or []:
            for r in rule.get("resources") or []:
                got.setdefault((g, r), set()).update(rule.get("verbs") or [])
    if got != EXPECTED_RBAC:
        def fmt(m):
            return ", ".join("%s/%s:%s" % (g or "core", r, "+".join(sorted(v)))
                             for (g, r), v in sorted(m.items()))
        errs.append("%s: ClusterRole enforcer must grant exactly [%s], it grants [%s]"
                    % (doc.name(), fmt(EXPECTED_RBAC), fmt(got)))
    return errs


def check_role(doc):
    """The namespaced Role: reading the agent's own DaemonSet, nothing else."""
    o = doc.obj
    if o.get("kind") != "Role" or o["metadata"].get("name") != "enforcer":
        return []
    got = {}
    for rule in o.get("rules") or []:
        for g in rule.get("apiGroups") or []:
            for r in rule.get("resources") or []:
                got.setdefault((g, r), set()).update(rule.get("verbs") or [])
    want = {("apps", "daemonsets"): {"get", "list", "watch"}}
    if got != want:
        return ["%s: Role enforcer must grant exactly apps/daemonsets:get+list+watch, it grants %s"
                % (doc.name(), sorted((g, r, sorted(v)) for (g, r), v in got.items()))]
    return []


def check_daemonset(doc):
    o = doc.obj
    if o.get("kind") != "DaemonSet" or o["metadata"].get("name") != "enforcer":
        return []
    errs = []

    def need(cond, what):
        if not cond:
            errs.append("%s: %s" % (doc.name(), what))

    spec = o.get("spec") or {}
    strategy = spec.get("updateStrategy") or {}
    need(strategy.get("type", "RollingUpdate") == "RollingUpdate"
         and (strategy.get("rollingUpdate") or {}).get("maxUnavailable") is not None,
         "updateStrategy must be RollingUpdate with maxUnavailable")
    pod = (spec.get("template") or {}).get("spec") or {}
    need(pod.get("hostNetwork") is True, "hostNetwork must be true")
    need(pod.get("priorityClassName") == "system-node-critical",
         "priorityClassName must be system-node-critical")
    need(any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect")
             for t in pod.get("tolerations") or []),
         "must tolerate every taint (a toleration with only operator: Exists)")
    need((pod.get("terminationGracePeriodSeconds") or 30) <= 30,
         "terminationGracePeriodSeconds must be small (<= 30)")
    need(pod.get("serviceAccountName") == "enforcer", "serviceAccountName must be enforcer")
    need((pod.get("nodeSelector") or {}).get("kubernetes.io/arch") == "amd64",
         "nodeSelector must pin kubernetes.io/arch: amd64 (the only architecture the image is built for)")
    volumes = {v.get("name"): v for v in pod.get("volumes") or []}
    agents = [c for c in pod.get("containers") or [] if c.get("name") == "agent"]
    need(len(agents) == 1, "must have one container named agent")
    for c in agents:
        args = c.get("args") or []
        need(args[:1] == ["run"], "agent args must start with run")
        need("--node=$(NODE_NAME)" in args, "agent args must contain --node=$(NODE_NAME)")
        need(any(re.fullmatch(r"--health-addr=.*:9717", a) for a in args),
             "agent args must serve health on port 9717")
        need(any(e.get("name") == "NODE_NAME"
                 and ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == "spec.nodeName"
                 for e in c.get("env") or []),
             "NODE_NAME must come from the downward API (spec.nodeName)")
        for name, field in (("POD_NAME", "metadata.name"), ("POD_NAMESPACE", "metadata.namespace")):
            need(any(e.get("name") == name
                     and ((e.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") == field
                     for e in c.get("env") or []),
                 "%s must come from the downward API (%s): without it, deleting the DaemonSet "
                 "leaves the programs attached" % (name, field))
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            need(get.get("path") == path and get.get("port") in (9717, "health"),
                 "%s must GET %s on the health port" % (probe, path))
        res = c.get("resources") or {}
        need({"cpu", "memory"} <= set(res.get("requests") or {}) and "memory" in (res.get("limits") or {}),
             "resources must request cpu and memory and limit memory")
        sc = c.get("securityContext") or {}
        need((sc.get("seccompProfile") or {}).get("type") == "Unconfined",
             "seccompProfile must be Unconfined (the runtime default blocks bpf())")
        need((sc.get("appArmorProfile") or {}).get("type") == "Unconfined",
             "appArmorProfile must be Unconfined (the runtime profile denies securityfs and bpffs writes)")
        mounts = {m.get("name"): m for m in c.get("volumeMounts") or []}
        bpffs = [m for m in mounts.values()
                 if ((volumes.get(m.get("name")) or {}).get("hostPath") or {}).get("path") == "/sys/fs/bpf"]
        need(len(bpffs) == 1, "the host's /sys/fs/bpf must be mounted once")
        if sc.get("privileged"):
            need(all(m.get("mountPropagation") == "Bidirectional" for m in bpffs),
                 "a privileged agent mounts bpffs itself: its mount must be Bidirectional")
        else:
            caps = sc.get("capabilities") or {}
            need("ALL" in (caps.get("drop") or []), "capabilities must drop ALL")
            added = set(caps.get("add") or [])
            need(REQUIRED_CAPS <= added, "capabilities must add %s" % sorted(REQUIRED_CAPS))
            need(added <= ALLOWED_CAPS, "capabilities beyond %s: %s" % (sorted(ALLOWED_CAPS), sorted(added - ALLOWED_CAPS)))
        for name, m in mounts.items():
            hp = ((volumes.get(name) or {}).get("hostPath") or {}).get("path")
            if hp is None:
                continue
            need(hp in HOST_PATHS, "unexpected hostPath %s" % hp)
            if hp not in WRITABLE_HOST_PATHS:
                need(m.get("readOnly") is True, "hostPath %s must be mounted readOnly" % hp)
    return errs


def check_crd(doc):
    o = doc.obj
    if o.get("kind") != "CustomResourceDefinition" or o["metadata"].get("name") != "runtimepolicies.enforcer.dev":
        return []
    spec = o.get("spec") or {}
    errs = []
    if spec.get("group") != "enforcer.dev" or (spec.get("names") or {}).get("plural") != "runtimepolicies" \
            or spec.get("scope") != "Namespaced":
        errs.append("%s: the agent watches namespaced enforcer.dev runtimepolicies" % doc.name())
    if not any(v.get("name") == "v1alpha1" and v.get("served") and v.get("storage")
               for v in spec.get("versions") or []):
        errs.append("%s: the agent watches version v1alpha1 (served, stored)" % doc.name())
    return errs


def check_all(docs, crds, versions):
    errs = []
    for d in docs:
        e = validate_doc(d, crds, versions)
        if not e:
            e = check_rbac(d) + check_role(d) + check_daemonset(d) + check_crd(d)
        errs += e
    return errs


def render(directory, kubectl):
    """Documents of `kubectl kustomize DIR`; raises ValueError on failure."""
    p = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise ValueError("kubectl kustomize %s failed (kustomize): %s" % (directory, p.stderr.strip()))
    source = "kubectl kustomize %s" % directory
    try:
        return [Doc(source, i, o) for i, o in enumerate(yaml.safe_load_all(p.stdout)) if o is not None]
    except yaml.YAMLError as e:
        raise ValueError("%s: YAML syntax error in the output: %s" % (source, e))


def manifest_files(root):
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and p.suffix in (".yaml", ".yml") and p.name not in KUSTOMIZATION_NAMES)


def kustomization_dirs(root):
    return sorted({p.parent for p in root.rglob("*") if p.name in KUSTOMIZATION_NAMES})


def load_crds(files):
    crds, errors = Crds(), []
    for f in files:
        try:
            docs = load_file(f)
        except ValueError:
            continue  # reported when the file itself is checked
        for d in docs:
            if isinstance(d.obj, dict) and d.obj.get("kind") == "CustomResourceDefinition":
                crds.add(d, errors)
    return crds, errors


def self_test(invalid_dir, crds, versions, kubectl):
    """Every fixture must be rejected with its expected message. Returns failures."""
    failures, rejected, skipped = [], 0, []
    fixtures = sorted(p for p in invalid_dir.iterdir() if p.suffix in (".yaml", ".yml") or p.is_dir())
    for fx in fixtures:
        marker = fx / "kustomization.yaml" if fx.is_dir() else fx
        expect = None
        for line in marker.read_text().splitlines():
            m = re.match(r"#\s*expect:\s*(.+)", line)
            if m:
                expect = m.group(1).strip()
                break
        if expect is None:
            failures.append("%s: fixture without an `# expect:` line" % fx)
            continue
        try:
            if fx.is_dir():
                if kubectl is None:
                    skipped.append(fx.name)
                    continue
                errs = check_all(render(fx, kubectl), crds, versions)
            else:
                errs = check_all(load_file(fx), crds, versions)
        except ValueError as e:
            errs = [str(e)]
        if not errs:
            failures.append("%s: ACCEPTED, but it is invalid (expected an error containing %r)" % (fx.name, expect))
        elif not any(expect in e for e in errs):
            failures.append("%s: rejected, but not for the expected reason %r: %s" % (fx.name, expect, errs))
        else:
            rejected += 1
            msg = next(e for e in errs if expect in e)
            print("  rejected as expected: %s: %s" % (fx.name, msg if len(msg) < 240 else msg[:240] + "..."))
    for s in skipped:
        print("  NOTE: fixture %s not run: kubectl (kustomize) is not installed" % s)
    return failures, rejected


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True, type=pathlib.Path, help="the deploy/ directory")
    ap.add_argument("--invalid", type=pathlib.Path, help="directory of fixtures that must be rejected")
    ap.add_argument("--shellcheck", type=pathlib.Path, help="directory of shell scripts to shellcheck (tests/e2e)")
    ap.add_argument("--k8s-version", action="append", dest="versions",
                    help="Kubernetes versions to validate against (repeatable)")
    args = ap.parse_args()
    versions = args.versions or ["1.30", "1.33", "1.37"]
    kubectl = shutil.which("kubectl")

    files = manifest_files(args.root)
    crds, errors = load_crds(files)
    if not crds.by_gvk:
        errors.append("no CustomResourceDefinition found under %s" % args.root)

    if args.invalid:
        print("deploy-check: self-test on %s (each fixture must be rejected)" % args.invalid)
        failures, rejected = self_test(args.invalid, crds, versions, kubectl)
        errors += failures
        print("deploy-check: %d invalid fixtures rejected" % rejected)

    ndocs = 0
    for f in files:
        try:
            docs = load_file(f)
        except ValueError as e:
            errors.append(str(e))
            continue
        ndocs += len(docs)
        errors += check_all(docs, crds, versions)
    print("deploy-check: %d files, %d documents validated against Kubernetes %s and the CRDs"
          % (len(files), ndocs, ", ".join(versions)))

    dirs = kustomization_dirs(args.root)
    if kubectl is None:
        print("deploy-check: NOTE: kubectl not installed: %d kustomizations NOT rendered "
              "(their files were validated one by one)" % len(dirs))
    else:
        nrendered = 0
        for d in dirs:
            try:
                docs = render(d, kubectl)
            except (ValueError, subprocess.TimeoutExpired) as e:
                errors.append(str(e))
                continue
            nrendered += len(docs)
            errors += check_all(docs, crds, versions)
            if d == args.root:
                ds = [x for x in docs if x.obj.get("kind") == "DaemonSet"]
                if any(((c.get("securityContext") or {}).get("privileged"))
                       for x in ds for c in x.obj["spec"]["template"]["spec"]["containers"]):
                    errors.append("%s: the default install must not be privileged" % d)
                if not any(x.obj.get("kind") == "ClusterRole" for x in docs) or not ds:
                    errors.append("%s: the default install must contain the agent" % d)
        print("deploy-check: %d kustomizations rendered (%d documents) and validated" % (len(dirs), nrendered))

    if args.shellcheck:
        scripts = sorted(args.shellcheck.glob("*.sh"))
        shellcheck = shutil.which("shellcheck")
        if shellcheck is None:
            print("deploy-check: NOTE: shellcheck not installed: %d scripts not checked" % len(scripts))
        else:
            p = subprocess.run([shellcheck, "-x"] + [s.name for s in scripts], cwd=args.shellcheck,
                               capture_output=True, text=True)
            if p.returncode != 0:
                errors.append("shellcheck %s:\n%s" % (args.shellcheck, p.stdout + p.stderr))
            print("deploy-check: shellcheck on %d scripts in %s" % (len(scripts), args.shellcheck))

    for e in errors:
        print("ERROR " + e)
    if errors:
        print("deploy-check: FAILED (%d errors)" % len(errors))
        return 1
    print("deploy-check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
