#!/usr/bin/env python3
"""Regenerates connectors/fhir/r4/structure.json: the FHIR R4 (4.0.1) element
tables carehub's validator reads (connectors/fhir/src/validate.rs).

Source: the R4 StructureDefinitions and ValueSets as the `fhir` npm package
(FHIR.js, Apache-2.0, lantanagroup) packs them (profiles/types.json,
profiles/valuesets.json); the definitions themselves are HL7's (CC0).
Usage: scripts/fhir-r4-structure.py [path/to/unpacked/package]
Without a path it fetches fhir@4.12.0 with `npm pack`.
"""
import json, os, subprocess, sys, tarfile, tempfile

VERSION = "4.12.0"
OUT = os.path.join(os.path.dirname(__file__), "..", "connectors", "fhir", "r4", "structure.json")

def package_dir():
    if len(sys.argv) > 1:
        return sys.argv[1]
    tmp = tempfile.mkdtemp()
    subprocess.run(["npm", "pack", f"fhir@{VERSION}", "--silent"], cwd=tmp, check=True)
    with tarfile.open(os.path.join(tmp, f"fhir-{VERSION}.tgz")) as t:
        t.extractall(tmp)
    return os.path.join(tmp, "package")

def main():
    pkg = package_dir()
    types = json.load(open(os.path.join(pkg, "profiles", "types.json")))
    valuesets = json.load(open(os.path.join(pkg, "profiles", "valuesets.json")))
    out_types, bindings = {}, set()

    def elements(path, props):
        rows = []
        for p in props:
            name = p["_name"]
            if name.startswith("_"):
                continue  # primitive extensions: every primitive element allows "_<name>"
            ty = p["_type"]
            nested = p.get("_properties") or []
            if nested and ty in ("BackboneElement", "Element"):
                child = f"{path}.{name}"
                out_types[child] = {"kind": "backbone", "elements": elements(child, nested)}
                ty = "#" + child
            binding = None
            if p.get("_valueSetStrength") == "required" and p.get("_valueSet"):
                binding = p["_valueSet"]
                bindings.add(binding)
            rows.append([name, ty, 1 if p.get("_multiple") else 0, 1 if p.get("_required") else 0,
                         p.get("_choice"), binding])
        return rows

    for name, t in sorted(types.items()):
        out_types[name] = {"kind": t["_kind"], "elements": elements(name, t.get("_properties", []))}
    out_vs = {}
    for url in sorted(bindings):
        vs = valuesets.get(url) or valuesets.get(url.split("|")[0])
        if not vs:
            continue  # not enumerable here (e.g. mime types): not checked
        codes = sorted({c["code"] for s in vs.get("systems", []) for c in s.get("codes", [])})
        if codes:
            out_vs[url] = codes
    doc = {
        "source": f"HL7 FHIR R4 4.0.1 definitions (CC0) as packed by the fhir npm package {VERSION} (Apache-2.0); regenerate with scripts/fhir-r4-structure.py",
        "types": out_types,
        "valuesets": out_vs,
    }
    with open(OUT, "w") as f:
        json.dump(doc, f, separators=(",", ":"), sort_keys=True)
        f.write("\n")
    print(f"{OUT}: {len(out_types)} types, {len(out_vs)} required value sets, {os.path.getsize(OUT)} bytes")

main()
