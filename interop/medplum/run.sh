#!/usr/bin/env bash
# Loads fhirgen's data, and Synthea's, into Medplum's FHIR router (an independent FHIR R4 server
# implementation, served by server.mjs) and checks that every load stores everything exactly once.
#
#   interop/medplum/run.sh PATH/TO/fhirgen
#
# Needs node (>= 20.10), npm, jq and curl; installs the pinned router (package-lock.json) when
# node_modules is missing. The Synthea bundles are read from $FHIRGEN_SHARED_DATA/synthea-bundles
# (default: ../shared/data next to the repository). Each scenario runs against a fresh server.
# Ends with "N passed, M failed"; exit status 0 only when nothing failed, 2 on a setup problem.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
count=2000
seed=1
as_of=2026-01-01
step_timeout=300

die() {
  echo "interop/medplum/run.sh: $*" >&2
  exit 2
}

[[ $# -eq 1 ]] || die "usage: interop/medplum/run.sh PATH/TO/fhirgen"
bin="$1"
[[ "$bin" == */* ]] || bin="$(command -v "$bin" || true)"
[[ -n "$bin" && -x "$bin" && ! -d "$bin" ]] || die "$1 is not an executable"
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"
for tool in node npm jq curl timeout; do
  command -v "$tool" >/dev/null || die "$tool is needed"
done
shared="${FHIRGEN_SHARED_DATA:-$root/../shared/data}"
synthea="$shared/synthea-bundles"
compgen -G "$synthea/*.json" >/dev/null ||
  die "no Synthea bundles in $synthea: set FHIRGEN_SHARED_DATA to the shared data folder (see its SOURCES.md)"

if [[ ! -d "$here/node_modules" ]]; then
  echo "== npm ci"
  timeout "$step_timeout" npm ci --prefix "$here" --no-audit --no-fund --loglevel=error
fi

# @medplum/core 5 needs a global WebSocket, which Node 20 has only behind a flag.
node_flags=()
if ! node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)'; then
  node_flags+=(--experimental-websocket --no-warnings)
fi

work="$(mktemp -d)"
server_pid=""
url=""
stop_server() {
  if [[ -n "$server_pid" ]]; then
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=""
  fi
}
trap 'stop_server; rm -rf "$work"' EXIT

# start_server [SERVER FLAGS]: a fresh, empty server; sets $url to its FHIR base.
start_server() {
  stop_server
  : >"$work/server.out"
  node "${node_flags[@]}" "$here/server.mjs" 0 "$@" >"$work/server.out" 2>"$work/server.err" &
  server_pid=$!
  for _ in $(seq 300); do
    if [[ -s "$work/server.out" ]]; then
      url="$(head -n 1 "$work/server.out")"
      echo "   server at $url${*:+ ($*)}"
      return
    fi
    if ! kill -0 "$server_pid" 2>/dev/null; then
      cat "$work/server.err" >&2
      die "server.mjs exited before it listened"
    fi
    sleep 0.1
  done
  die "server.mjs did not listen within 30 s"
}

passed=0
failed=0
# check WHAT EXPECTED GOT
check() {
  if [[ "$2" == "$3" ]]; then
    passed=$((passed + 1))
    echo "   ok   $1"
  else
    failed=$((failed + 1))
    echo "   FAIL $1: expected $2, got $3"
  fi
}

# load NAME ARGS...: runs fhirgen load with --json into $work/NAME.json; sets $status.
load() {
  local name=$1
  shift
  status=0
  timeout "$step_timeout" "$bin" load --fhir-url "$url" "$@" --json --quiet \
    >"$work/$name.json" 2>"$work/$name.err" || status=$?
  echo "   load $*: exit $status, $(jq -c '{stored, created, already_present, updated, failed, not_sent}' \
    "$work/$name.json" 2>/dev/null || echo 'no summary')"
  if [[ $status -ne 0 ]]; then
    grep -v 'metadata is not a FHIR CapabilityStatement' "$work/$name.err" | head -n 5 | sed 's/^/     /'
  fi
}

# field NAME KEY: a key of the load summary NAME.
field() {
  jq -r ".$2" "$work/$1.json" 2>/dev/null || echo "(no summary)"
}

# expect_load NAME STORED CREATED ALREADY_PRESENT UPDATED: a load that stored everything.
expect_load() {
  check "$1 exits 0" 0 "$status"
  check "$1 failed" 0 "$(field "$1" failed)"
  check "$1 not_sent" 0 "$(field "$1" not_sent)"
  check "$1 stored" "$2" "$(field "$1" stored)"
  check "$1 created" "$3" "$(field "$1" created)"
  check "$1 already_present" "$4" "$(field "$1" already_present)"
  check "$1 updated" "$5" "$(field "$1" updated)"
}

# verify NAME ARGS...: fhirgen verify with --exact-counts (the server holds nothing else).
verify() {
  local name=$1 code=0
  shift
  timeout "$step_timeout" "$bin" verify --fhir-url "$url" "$@" --exact-counts --json --quiet \
    >"$work/$name.json" 2>"$work/$name.err" || code=$?
  check "$name exits 0" 0 "$code"
  check "$name missing, duplicated, count mismatches" "0 0 []" \
    "$(jq -r '"\(.missing.count) \(.duplicated.count) \(.count_mismatches | tojson)"' "$work/$name.json" 2>/dev/null ||
      echo "(no report)")"
  if [[ $code -ne 0 ]]; then
    jq -c '{missing: .missing.first[0:3], duplicated: .duplicated.first[0:3], fatal_error}' \
      "$work/$name.json" 2>/dev/null | sed 's/^/     /' || true
  fi
}

# Per type, what `generate` writes: the counts the server must hold, read with _summary=count.
timeout "$step_timeout" "$bin" generate --count "$count" --seed "$seed" --as-of "$as_of" |
  jq -r .resourceType | sort | uniq -c | awk '{print $2 "=" $1}' >"$work/expected-counts"
counts_held() {
  local type
  while IFS='=' read -r type _; do
    echo "$type=$(curl -fsS --max-time 60 "$url/$type?_summary=count" | jq -r .total)"
  done <"$work/expected-counts"
}
expect_counts() {
  check "$1: per-type _summary=count" "$(paste -sd ' ' "$work/expected-counts")" "$(counts_held | paste -sd ' ')"
}

data=(--count "$count" --seed "$seed" --as-of "$as_of")
start=$SECONDS

echo "== generated data ($count resources): transaction, the same again, update, create"
start_server
load tx1 "${data[@]}" --mode transaction
expect_load tx1 "$count" "$count" 0 0
verify verify-tx1 "${data[@]}"
expect_counts "after transaction"
load tx2 "${data[@]}" --mode transaction
expect_load tx2 "$count" 0 "$count" 0
verify verify-tx2 "${data[@]}"
expect_counts "after transaction again"
load update "${data[@]}" --mode update
# Update mode PUTs by identifier. A Provenance has none (R4): it is found by its source-key tag
# and left as it is.
provenance="$(awk -F= '$1 == "Provenance" {print $2}' "$work/expected-counts")"
provenance="${provenance:-0}"
expect_load update "$count" 0 "$provenance" "$((count - provenance))"
verify verify-update "${data[@]}"
expect_counts "after update"
load create "${data[@]}" --mode create
expect_load create "$count" 0 "$count" 0
verify verify-create "${data[@]}"
expect_counts "after create"

for mode in update create; do
  echo "== generated data: --mode $mode into an empty server"
  start_server
  load "fresh-$mode" "${data[@]}" --mode "$mode"
  expect_load "fresh-$mode" "$count" "$count" 0 0
  verify "verify-fresh-$mode" "${data[@]}"
  expect_counts "after $mode"
done

echo "== Synthea bundles ($synthea): transaction twice, then create"
synthea_count="$(jq -s 'map(.entry | length) | add' "$synthea"/*.json)"
start_server
load synthea1 --input "$synthea"
expect_load synthea1 "$synthea_count" "$synthea_count" 0 0
load synthea2 --input "$synthea"
expect_load synthea2 "$synthea_count" 0 "$synthea_count" 0
verify verify-synthea --input "$synthea"
load synthea-create --input "$synthea" --mode create
expect_load synthea-create "$synthea_count" 0 "$synthea_count" 0

echo "== a project with the transaction-bundles feature: transactions with conditional creates"
echo "   hold at most 8 entries (Medplum's maxSerializableTransactionEntries)"
refusal="Transaction requires strict isolation but has too many entries"
start_server --transaction-bundles
load strict "${data[@]}" --failed "$work/strict-failed.ndjson"
check "default --bundle-size exits 1" 1 "$status"
check "default --bundle-size: every refused entry names the limit" "HTTP 400: $refusal" \
  "$(jq -r 'select(.failure.status != null) | .failure.message' "$work/strict-failed.ndjson" 2>/dev/null |
    sort -u | paste -sd '|')"
hinted="$(grep -o -- '--bundle-size [0-9]*' "$work/strict.err" | head -n 1 | cut -d' ' -f2)"
check "default --bundle-size: the hint names a size under the cap" "a size from 1 to 8" \
  "$([[ "$hinted" =~ ^[1-8]$ ]] && echo "a size from 1 to 8" || echo "'$hinted'")"
load strict-hinted "${data[@]}" --bundle-size "${hinted:-8}"
expect_load strict-hinted "$count" "$((count - $(field strict stored)))" "$(field strict stored)" 0
verify verify-strict-hinted "${data[@]}"
expect_counts "after the hinted --bundle-size"

echo
echo "took $((SECONDS - start)) s"
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
