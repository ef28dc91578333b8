#!/usr/bin/env bash
# Generates data with a fhirgen binary and validates it against FHIR R4 and US Core 5.0.1.
#
#   validation/run.sh [PATH/TO/fhirgen]
#
# Installs the pinned validators from the npm registry (validation/package-lock.json), builds nothing.
# The binary defaults to target/release/fhirgen, else target/debug/fhirgen.
# Exit status: 0 all data valid, 1 validation errors (or fhirgen failed), 2 setup problem.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

bin="${1:-}"
if [[ -z "$bin" ]]; then
  if [[ -x target/release/fhirgen ]]; then
    bin=target/release/fhirgen
  elif [[ -x target/debug/fhirgen ]]; then
    bin=target/debug/fhirgen
  else
    echo "validation/run.sh: no fhirgen binary: build one (cargo build --release) or pass its path" >&2
    exit 2
  fi
fi
if [[ ! -x "$bin" ]]; then
  echo "validation/run.sh: $bin is not an executable" >&2
  exit 2
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "validation/run.sh: node and npm are needed (Node >= 20.19)" >&2
  exit 2
fi

echo "== installing validators (npm ci)"
start=$SECONDS
npm ci --prefix validation --no-audit --no-fund --loglevel=error
echo "installed in $((SECONDS - start)) s"

status=0

# check COUNT SEED AS_OF: generate and validate one data set, with the self-test of the validator.
check() {
  local count=$1 seed=$2 as_of=$3
  echo
  echo "== $bin generate --count $count --seed $seed --as-of $as_of | validate"
  local start=$SECONDS
  set +e
  "$bin" generate --count "$count" --seed "$seed" --as-of "$as_of" |
    node validation/validate.mjs - --self-test
  local codes=("${PIPESTATUS[@]}")
  set -e
  echo "took $((SECONDS - start)) s"
  if [[ ${codes[0]} -ne 0 ]]; then
    echo "validation/run.sh: fhirgen generate exited with ${codes[0]}" >&2
    status=1
  fi
  if [[ ${codes[1]} -ne 0 ]]; then
    echo "validation/run.sh: validation failed (exit ${codes[1]})" >&2
    status=1
  fi
}

check 20000 1 2026-01-01
check 5000 20240229 2024-02-29

echo
if [[ $status -eq 0 ]]; then
  echo "validation/run.sh: all generated data is valid"
else
  echo "validation/run.sh: FAILED"
fi
exit $status
