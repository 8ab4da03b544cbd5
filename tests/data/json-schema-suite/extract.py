#!/usr/bin/env python3
"""Build draft2020-12.json from JSON-Schema-Test-Suite (tests/draft2020-12/*.json).

Usage: python3 extract.py <suite checkout dir | bare git dir> [output.json]

Keeps every test group of the required draft 2020-12 files (not optional/) that
has at least one test with "valid": true (so its schema is known satisfiable), and
drops groups that need a document from outside the schema itself: a $ref,
$dynamicRef or $schema whose target is not the schema or an $id inside it
(http://localhost:1234/... remotes, the 2020-12 metaschema, ...), or whose
$schema is not draft 2020-12. Prints the counts to stderr.
"""
import json
import os
import subprocess
import sys
import tempfile
from collections import Counter
from urllib.parse import urljoin, urlsplit

DRAFT = "https://json-schema.org/draft/2020-12/schema"
METASCHEMA_PREFIX = "https://json-schema.org/draft/2020-12/"
ROOT = "https://root.invalid/schema.json"  # stand-in base URI of a schema without $id

SCHEMA_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
SCHEMA_ONE = ("items", "additionalItems", "additionalProperties", "not", "if", "then", "else",
              "contains", "propertyNames", "unevaluatedItems", "unevaluatedProperties",
              "contentSchema")
SCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems", "items")


def subschemas(schema):
    """Yield (keyword, subschema) for the subschemas of one schema object."""
    if not isinstance(schema, dict):
        return
    for k in SCHEMA_MAP:
        if isinstance(schema.get(k), dict):
            for v in schema[k].values():
                yield k, v
    for k in SCHEMA_ONE:
        if isinstance(schema.get(k), (dict, bool)):
            yield k, schema[k]
    for k in SCHEMA_LIST:
        if isinstance(schema.get(k), list):
            for v in schema[k]:
                yield k, v


def walk(schema, base=ROOT, depth=0):
    """Yield (schema object, its base URI, depth) for every (sub)schema."""
    if not isinstance(schema, dict):
        return
    if isinstance(schema.get("$id"), str):
        base = join(base, schema["$id"])
    yield schema, base, depth
    for _, sub in subschemas(schema):
        yield from walk(sub, base, depth + 1)


def nofrag(uri):
    return uri.split("#", 1)[0]


def join(base, ref):
    if urlsplit(ref).scheme:
        return ref
    if ref.startswith("#"):
        return nofrag(base) + ref
    if base.startswith("urn:"):  # urljoin cannot resolve against a URN
        return "unresolvable:" + ref
    return urljoin(base, ref)


def external_refs(schema):
    """Targets (without fragment) of $ref/$dynamicRef/$schema outside the schema."""
    known = {nofrag(ROOT)}
    for s, base, _ in walk(schema):
        known.add(nofrag(base))
    out = []
    for s, base, depth in walk(schema):
        for k in ("$ref", "$dynamicRef", "$schema"):
            v = s.get(k)
            if not isinstance(v, str):
                continue
            if k == "$schema":
                if v.rstrip("#") == DRAFT and depth == 0:
                    continue
                target = v
            else:
                target = join(base, v)
            if nofrag(target) not in known:
                out.append((k, nofrag(target)))
    return out


def exclusion(schema):
    """None if the group is kept, else the reason."""
    if isinstance(schema, dict):
        s = schema.get("$schema")
        if isinstance(s, str) and s.rstrip("#") != DRAFT and not s.startswith("http://localhost"):
            return "$schema not draft 2020-12"
    ext = external_refs(schema)
    if not ext:
        return None
    targets = {t for _, t in ext}
    if all(t.startswith(METASCHEMA_PREFIX) for t in targets):
        return "refers to the 2020-12 metaschema"
    if any(t.startswith("http://localhost:1234") for t in targets):
        return "refers to remotes/ (localhost:1234)"
    return "refers to another external URI"


def suite_dir(path):
    """A directory holding tests/draft2020-12, exporting a bare git dir if needed."""
    if os.path.isdir(os.path.join(path, "tests", "draft2020-12")):
        return path, None
    tmp = tempfile.mkdtemp(prefix="json-schema-suite-")
    archive = subprocess.run(["git", "--git-dir", path, "archive", "HEAD", "tests"],
                             check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
    commit = subprocess.run(["git", "--git-dir", path, "rev-parse", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    return tmp, commit


def groups(directory):
    for name in sorted(os.listdir(directory)):
        if name.endswith(".json"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                for group in json.load(f):
                    yield name, group


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    root, commit = suite_dir(sys.argv[1])
    out_path = sys.argv[2] if len(sys.argv) == 3 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "draft2020-12.json")
    draft = os.path.join(root, "tests", "draft2020-12")
    total = 0
    reasons = Counter()
    corpus = []
    for name, group in groups(draft):
        total += 1
        valid = [t["data"] for t in group["tests"] if t["valid"]]
        if not valid:
            reasons["no valid test"] += 1
            continue
        why = exclusion(group["schema"])
        if why:
            reasons[why] += 1
            continue
        corpus.append({"file": name, "description": group["description"],
                       "schema": group["schema"], "valid": valid})
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(corpus, f, indent=1, ensure_ascii=False)
        f.write("\n")
    log = lambda *a: print(*a, file=sys.stderr)
    if commit:
        log("suite commit", commit)
    log("groups in tests/draft2020-12/*.json:", total)
    log("  with >= 1 valid test:", total - reasons["no valid test"])
    for why, n in sorted(reasons.items()):
        log(f"  excluded, {why}: {n}")
    log("kept:", len(corpus), "->", out_path)
    fmt = os.path.join(draft, "optional", "format")
    extra = [g for _, g in groups(fmt) if any(t["valid"] for t in g["tests"])
             and not exclusion(g["schema"])]
    log("optional/format groups that would be added:", len(extra))


if __name__ == "__main__":
    main()
