#!/usr/bin/env python3
"""Generates apimachinery/src/protobuf/types.table, the data that drives the
Kubernetes protobuf -> JSON decoder in k3rs-apimachinery (module `protobuf`).

Regenerate (e.g. for a new Kubernetes minor release):

    # bare git dirs (as the `fetch` tool returns them) or plain checkouts,
    # e.g. $GOPATH/pkg/mod/k8s.io/api@v0.33.13
    python3 scripts/gen-protobuf-table.py \
        --api /path/to/kubernetes/api --apimachinery /path/to/kubernetes/apimachinery \
        --ref v0.33.13 > apimachinery/src/protobuf/types.table

`--ref` is only used for git dirs (git show <ref>:<path>); plain checkouts are
read as they are. Only Python's standard library is needed.

How the facts are gathered (nothing is copied, only field facts are kept):
  * the Go `types.go` files give, per struct field in declaration order, the
    JSON name (`json:"name,omitempty"`, `,inline`, `-`), whether it is a
    pointer, whether it is `omitempty`, and the protobuf field number (from the
    `protobuf:"bytes,3,rep,name=foo"` tag); named slice types such as
    `type ExtraValue []string` become list wrapper messages;
  * the `generated.proto` files next to them give the wire type of each field
    number (int32/int64/bool/string/bytes, message type, map<K,V>, repeated).
    Go tags are not reliable for that (e.g. IntOrString fields are tagged
    `varint` but are length-delimited messages), so the proto file wins, and
    the script cross-checks both (every tagged Go field must exist in the
    proto message and vice versa) and fails loudly on any mismatch.
  * `+genclient` objects (structs embedding metav1.TypeMeta inline) give the
    apiVersion/kind -> message mapping, with the group from register.go.

Table format (one record per line, space separated, `#` comments):
  P <alias> <proto package>            package alias used in names below
  K <apiVersion> <kind> <alias.Msg>    object kind -> message
  S <alias.Msg> <special>              message with hand-written JSON form:
                                       time, microtime, duration, quantity,
                                       intorstring, rawextension, fieldsv1,
                                       groupversion
  M <alias.Msg> [list]                 starts a message; `list` = Go named
                                       slice (JSON is the array in field 1)
  <num> <json> <type> <flags>          a field of the current message, in Go
                                       declaration order. json `_` = inline
                                       (fields merged into the parent).
                                       type: string|bytes|bool|int32|int64|
                                       uint32|uint64|double|float|<alias.Msg>|
                                       map:<keytype>:<valuetype>
                                       flags: `-` or letters r=repeated,
                                       p=Go pointer, o=omitempty, i=inline
"""

import argparse
import os
import re
import subprocess
import sys

API_GROUPS = [
    "core", "apps", "batch", "autoscaling", "coordination", "discovery", "events",
    "rbac", "networking", "storage", "policy", "scheduling", "node", "certificates",
    "admissionregistration", "authorization", "authentication",
]

# proto package -> (repo key, directory, Go files holding the structs)
def packages():
    out = []
    for g in API_GROUPS:
        out.append((f"k8s.io.api.{g}.v1", "api", f"{g}/v1", ["types.go"], g))
    out.append(("k8s.io.apimachinery.pkg.apis.meta.v1", "machinery", "pkg/apis/meta/v1",
                ["types.go", "watch.go", "group_version.go"], "meta"))
    out.append(("k8s.io.apimachinery.pkg.runtime", "machinery", "pkg/runtime", ["types.go"], "runtime"))
    out.append(("k8s.io.apimachinery.pkg.api.resource", "machinery", "pkg/api/resource", [], "resource"))
    out.append(("k8s.io.apimachinery.pkg.util.intstr", "machinery", "pkg/util/intstr", [], "intstr"))
    return out

ALIASES = {
    "core": "c", "apps": "apps", "batch": "batch", "autoscaling": "as", "coordination": "coord",
    "discovery": "disc", "events": "ev", "rbac": "rbac", "networking": "net", "storage": "st",
    "policy": "pol", "scheduling": "sch", "node": "node", "certificates": "cert",
    "admissionregistration": "adm", "authorization": "authz", "authentication": "authn",
    "meta": "m", "runtime": "rt", "resource": "res", "intstr": "is",
}

SPECIALS = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Time": "time",
    "k8s.io.apimachinery.pkg.apis.meta.v1.MicroTime": "microtime",
    "k8s.io.apimachinery.pkg.apis.meta.v1.Duration": "duration",
    "k8s.io.apimachinery.pkg.apis.meta.v1.FieldsV1": "fieldsv1",
    "k8s.io.apimachinery.pkg.apis.meta.v1.GroupVersion": "groupversion",
    "k8s.io.apimachinery.pkg.api.resource.Quantity": "quantity",
    "k8s.io.apimachinery.pkg.util.intstr.IntOrString": "intorstring",
    "k8s.io.apimachinery.pkg.runtime.RawExtension": "rawextension",
}
# Helper messages that never appear in Kubernetes objects.
SKIP = {
    "k8s.io.apimachinery.pkg.apis.meta.v1.Timestamp",
    "k8s.io.apimachinery.pkg.api.resource.QuantityValue",
}

SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float"}


class Source:
    def __init__(self, path, ref):
        self.path = path
        self.ref = ref
        self.is_git = not os.path.isdir(os.path.join(path, "pkg")) and not os.path.isdir(
            os.path.join(path, "core"))

    def read(self, rel):
        if self.is_git:
            try:
                return subprocess.run(["git", "-C", self.path, "show", f"{self.ref}:{rel}"],
                                      check=True, capture_output=True, text=True).stdout
            except subprocess.CalledProcessError as e:
                sys.exit(f"cannot read {rel} at {self.ref} in {self.path}: {e.stderr.strip()}")
        with open(os.path.join(self.path, rel), encoding="utf-8") as f:
            return f.read()


# ---------------------------------------------------------------- proto parsing

def strip_comments(text):
    """Removes // and /* */ comments (Go and proto), keeping string literals."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif c in "\"`":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if (c == '"' and text[j] == "\\") else 1
            out.append(text[i:j + 1])
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_proto(text):
    """Returns (package, {msg: [(label, type, name, number)]}) in file order."""
    text = strip_comments(text)
    pkg = re.search(r"^\s*package\s+([\w.]+)\s*;", text, re.M).group(1)
    msgs = {}
    for m in re.finditer(r"message\s+(\w+)\s*\{(.*?)\n\}", text, re.S):
        fields = []
        for line in m.group(2).split(";"):
            line = line.strip()
            if not line or line.startswith(("option ", "reserved ")):
                continue
            fm = re.fullmatch(r"(optional|repeated|required)\s+([\w.]+)\s+(\w+)\s*=\s*(\d+)", line)
            mm = re.fullmatch(r"map\s*<\s*([\w.]+)\s*,\s*([\w.]+)\s*>\s*(\w+)\s*=\s*(\d+)", line)
            if fm:
                fields.append((fm.group(1), fm.group(2), fm.group(3), int(fm.group(4))))
            elif mm:
                fields.append(("map", (mm.group(1), mm.group(2)), mm.group(3), int(mm.group(4))))
            else:
                sys.exit(f"{pkg}.{m.group(1)}: cannot parse proto field {line!r}")
        msgs[m.group(1)] = fields
    return pkg, msgs


def qualify(pkg, t):
    if t in SCALARS:
        return t
    if t.startswith("."):
        return t[1:]
    return f"{pkg}.{t}"


# ---------------------------------------------------------------- Go parsing

TAG_RE = re.compile(r'(\w+):"([^"]*)"')


class GoField:
    def __init__(self, name, gotype, tags, embedded):
        self.name = name
        self.gotype = gotype
        self.tags = tags
        self.embedded = embedded


def parse_go(text):
    """Returns {typename: ('struct', [GoField]) | ('named', underlying)}."""
    types = {}
    text = strip_comments(text)
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{\s*$", line)
        if m:
            name = m.group(1)
            fields = []
            i += 1
            while i < len(lines) and not lines[i].startswith("}"):
                fl = lines[i].strip()
                i += 1
                if not fl or fl.startswith("//"):
                    continue
                tags = {}
                tm = re.search(r"`([^`]*)`", fl)
                if tm:
                    tags = dict(TAG_RE.findall(tm.group(1)))
                    fl = fl[:tm.start()].strip()
                fl = re.sub(r"//.*$", "", fl).strip()
                parts = fl.split()
                if len(parts) == 1:
                    t = parts[0]
                    fname = t.lstrip("*").split(".")[-1]
                    fields.append(GoField(fname, t, tags, True))
                elif len(parts) == 2:
                    if "," in parts[0]:
                        sys.exit(f"{name}: multi-name field lines are not supported: {fl!r}")
                    fields.append(GoField(parts[0], parts[1], tags, False))
                else:
                    sys.exit(f"{name}: cannot parse Go field {fl!r}")
            types[name] = ("struct", fields)
            i += 1
            continue
        m = re.match(r"^type\s+(\w+)\s+struct\s*\{\s*\}\s*$", line)
        if m:
            types[m.group(1)] = ("struct", [])
            i += 1
            continue
        m = re.match(r"^type\s+(\w+)\s+(=\s*)?(\S+)\s*$", line)
        if m and m.group(3) != "struct":
            types[m.group(1)] = ("named", m.group(3))
        i += 1
    return types


def json_tag(f):
    """(json name or None for inline, omitempty, skip)"""
    tag = f.tags.get("json")
    if tag is None:
        if f.embedded:
            return None, False, False
        return f.name, False, False
    if tag == "-":
        return None, False, True
    parts = tag.split(",")
    name = parts[0]
    opts = parts[1:]
    omit = "omitempty" in opts
    if name == "":
        if "inline" in opts or f.embedded:
            return None, omit, False
        name = f.name
    return name, omit, False


# ---------------------------------------------------------------- generation

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--api", required=True, help="k8s.io/api git dir or checkout")
    ap.add_argument("--apimachinery", required=True, help="k8s.io/apimachinery git dir or checkout")
    ap.add_argument("--ref", default="v0.33.13", help="git ref for git dirs")
    args = ap.parse_args()
    srcs = {"api": Source(args.api, args.ref), "machinery": Source(args.apimachinery, args.ref)}

    proto = {}        # full msg name -> fields
    proto_order = []  # full msg names, file order
    gotypes = {}      # proto pkg -> Go types
    groups = {}       # proto pkg -> apiVersion
    alias_of = {}     # proto pkg -> alias
    for pkg, repo, d, files, short in packages():
        ppkg, msgs = parse_proto(srcs[repo].read(f"{d}/generated.proto"))
        if ppkg != pkg:
            sys.exit(f"{d}/generated.proto: package {ppkg}, expected {pkg}")
        for name, fields in msgs.items():
            proto[f"{pkg}.{name}"] = fields
            proto_order.append(f"{pkg}.{name}")
        gt = {}
        for f in files:
            gt.update(parse_go(srcs[repo].read(f"{d}/{f}")))
        gotypes[pkg] = gt
        alias_of[pkg] = ALIASES[short]
        if repo == "api" or short == "meta":
            reg = srcs[repo].read(f"{d}/register.go")
            gm = re.search(r'GroupName\s*=\s*"([^"]*)"', reg)
            group = gm.group(1) if gm else ""
            groups[pkg] = f"{group}/v1" if group else "v1"

    def short(full):
        pkg, _, name = full.rpartition(".")
        return f"{alias_of[pkg]}.{name}"

    def go_struct(pkg, name):
        """Resolves a Go type name in a package to its struct fields."""
        t = gotypes[pkg].get(name)
        if t is None:
            return None
        if t[0] == "struct":
            return t
        under = t[1]
        # type List metav1.List: a struct defined in another package
        if "." in under and not under.startswith(("[", "map[", "*")):
            other = under.split(".")[-1]
            for p2, gt in gotypes.items():
                if p2 != pkg and other in gt and gt[other][0] == "struct":
                    return gt[other]
        return t

    out = ["# Generated by scripts/gen-protobuf-table.py from k8s.io/api and "
           f"k8s.io/apimachinery {args.ref}. Do not edit by hand.",
           "# Format: see the script's header."]
    for pkg, a in alias_of.items():
        out.append(f"P {a} {pkg}")

    kinds = []
    body = []
    referenced = set()
    emitted = set()
    problems = []
    for full in proto_order:
        if full in SKIP:
            continue
        pkg, _, name = full.rpartition(".")
        if full in SPECIALS:
            body.append(f"S {short(full)} {SPECIALS[full]}")
            emitted.add(full)
            continue
        pfields = {num: (label, typ, pname) for label, typ, pname, num in proto[full]}
        t = go_struct(pkg, name)
        if t is None:
            problems.append(f"{full}: no Go type found")
            continue
        if t[0] == "named":
            under = t[1]
            if not under.startswith("[]") or list(pfields) != [1]:
                problems.append(f"{full}: unsupported named Go type {under}")
                continue
            label, typ, _ = pfields[1]
            q = qualify(pkg, typ)
            if q not in SCALARS:
                referenced.add(q)
            body.append(f"M {short(full)} list")
            body.append(f"1 items {q if q in SCALARS else short(q)} r")
            emitted.add(full)
            continue
        lines = [f"M {short(full)}"]
        used = set()
        is_kind = False
        for f in t[1]:
            jname, omit, skip = json_tag(f)
            ptag = f.tags.get("protobuf")
            if f.embedded and f.gotype.lstrip("*").endswith("TypeMeta") and ptag is None:
                # metav1.TypeMeta inline: apiVersion/kind come from the envelope
                is_kind = True
                continue
            if ptag is None or ptag == "-":
                if skip:
                    continue
                if omit or jname is None:
                    problems.append(f"{full}.{f.name}: Go field without protobuf tag (ignored)")
                    continue
                problems.append(f"{full}.{f.name}: non-omitempty Go field without protobuf tag")
                continue
            num = int(ptag.split(",")[1])
            if num not in pfields:
                problems.append(f"{full}.{f.name}: protobuf field {num} missing in proto")
                continue
            used.add(num)
            if skip:
                continue  # json:"-": on the wire but not in JSON
            label, typ, pname = pfields[num]
            pointer = f.gotype.startswith("*")
            if label == "map":
                k, v = typ
                kq, vq = qualify(pkg, k), qualify(pkg, v)
                if kq not in SCALARS:
                    problems.append(f"{full}.{f.name}: map key type {k}")
                    continue
                if vq not in SCALARS:
                    referenced.add(vq)
                # (a named Go map type such as ResourceList is still a map)
                tstr = f"map:{kq}:{vq if vq in SCALARS else short(vq)}"
            else:
                q = qualify(pkg, typ)
                if q not in SCALARS:
                    referenced.add(q)
                tstr = q if q in SCALARS else short(q)
                gt = f.gotype.lstrip("*")
                if label == "repeated" and not (gt.startswith("[]") or q not in SCALARS):
                    problems.append(f"{full}.{f.name}: repeated proto field but Go type {f.gotype}")
                if q == "bytes" and label != "repeated" and gt != "[]byte":
                    problems.append(f"{full}.{f.name}: bytes proto field but Go type {f.gotype}")
            flags = ""
            if label == "repeated":
                flags += "r"
            if pointer:
                flags += "p"
            if omit:
                flags += "o"
            if jname is None:
                flags += "i"
                if label not in ("optional", "required") or tstr in SCALARS:
                    problems.append(f"{full}.{f.name}: inline field that is not a message")
            lines.append(f"{num} {jname if jname is not None else '_'} {tstr} {flags or '-'}")
        for num in pfields:
            if num not in used:
                problems.append(f"{full}: proto field {num} ({pfields[num][2]}) has no Go field")
        body.extend(lines)
        emitted.add(full)
        if is_kind and pkg in groups:
            kinds.append(f"K {groups[pkg]} {name} {short(full)}")
    for r in sorted(referenced):
        if r not in emitted:
            problems.append(f"referenced message {r} not emitted")

    fatal = [p for p in problems if "ignored" not in p]
    for p in problems:
        print(("error: " if p in fatal else "note: ") + p, file=sys.stderr)
    if fatal:
        sys.exit(1)
    out.extend(kinds)
    out.extend(body)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
