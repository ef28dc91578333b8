#!/usr/bin/env python3
"""Compares what a fhirgen data set holds with Synthea's patients: resources per patient and
share of bytes per resource type, as a Markdown table (the one in README's "What the data set
holds").

    python3 validation/chart_mix.py [PATH/TO/fhirgen] [--count N]

The Synthea samples are read from ../shared/data beside the checkout (see its SOURCES.md):
synthea-bundles/ (3 patients' transaction bundles) and bulk-ndjson/ktmtwm-sytheadata/ (one
patient's bulk export). Shared resources (Organization, Location, Practitioner,
PractitionerRole, Medication) are counted per patient too, as they come with the data set.
Sizes are of compact JSON, the same for every source.
"""

import collections
import json
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"


def compact(resource):
    return len(json.dumps(resource, separators=(",", ":"), ensure_ascii=False).encode())


class Mix:
    def __init__(self, name):
        self.name = name
        self.count = collections.Counter()
        self.bytes = collections.Counter()

    def add(self, resource):
        kind = resource["resourceType"]
        self.count[kind] += 1
        self.bytes[kind] += compact(resource)

    @property
    def patients(self):
        return max(self.count["Patient"], 1)


def synthea_bundles():
    mix = Mix("Synthea bundles")
    for path in sorted((DATA / "synthea-bundles").glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            mix.add(entry["resource"])
    return mix


def synthea_bulk():
    mix = Mix("Synthea bulk export")
    folder = DATA / "bulk-ndjson" / "ktmtwm-sytheadata"
    for path in sorted(folder.glob("*.ndjson")):
        for line in path.read_text().splitlines():
            if line.strip():
                mix.add(json.loads(line))
    for path in sorted(folder.glob("*.json")):
        for entry in json.loads(path.read_text())["entry"]:
            mix.add(entry["resource"])
    return mix


def fhirgen(binary, count):
    mix = Mix("fhirgen")
    args = [binary, "generate", "--count", str(count), "--seed", "1", "--as-of", "2026-01-01"]
    with subprocess.Popen(args, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            mix.add(json.loads(line))
    if process.returncode != 0:
        sys.exit(f"chart_mix.py: {' '.join(args)} exited with {process.returncode}")
    return mix


def table(mixes):
    kinds = sorted(
        set().union(*(m.count for m in mixes)),
        key=lambda k: -sum(m.bytes[k] / sum(m.bytes.values()) for m in mixes),
    )
    head = ["type"] + [f"{m.name} per patient" for m in mixes] + [f"{m.name} bytes" for m in mixes]
    rows = [head, ["---"] + ["---:"] * (len(head) - 1)]
    for kind in kinds:
        per_patient = [f"{m.count[kind] / m.patients:.1f}" if m.count[kind] else "-" for m in mixes]
        shares = [
            f"{100 * m.bytes[kind] / sum(m.bytes.values()):.1f}%" if m.count[kind] else "-"
            for m in mixes
        ]
        rows.append([kind] + per_patient + shares)
    rows.append(
        ["**all**"]
        + [f"**{sum(m.count.values()) / m.patients:.0f}**" for m in mixes]
        + [f"**{sum(m.bytes.values()) / m.patients / 1024:.0f} KiB/patient**" for m in mixes]
    )
    rows.append(
        ["resources per encounter"]
        + [f"{sum(m.count.values()) / max(m.count['Encounter'], 1):.1f}" for m in mixes]
        + [""] * len(mixes)
    )
    rows.append(["types"] + [str(len(m.count)) for m in mixes] + [""] * len(mixes))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main():
    args = sys.argv[1:]
    count = 100_000
    if "--count" in args:
        at = args.index("--count")
        count = int(args[at + 1])
        del args[at : at + 2]
    binary = args[0] if args else str(ROOT / "target" / "release" / "fhirgen")
    if not (DATA / "synthea-bundles").is_dir():
        sys.exit(f"chart_mix.py: no Synthea samples at {DATA}: check out beside shared/")
    mixes = [fhirgen(binary, count), synthea_bundles(), synthea_bulk()]
    print(f"fhirgen: --count {count} --seed 1 --as-of 2026-01-01, {mixes[0].count['Patient']} patients")
    print(table(mixes))


if __name__ == "__main__":
    main()
