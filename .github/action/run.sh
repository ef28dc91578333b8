#!/usr/bin/env bash
# The action's load step: runs `fhirgen load ... --json`, turns the summary into step outputs
# and a Markdown table in the job summary, then (with verify: true) reads the store back.
# Fails when anything was not stored, or verify found the store short.
#
# Inputs arrive as INPUT_* variables (action.yml sets them); FHIRGEN_BIN names the binary.
# Needs bash 3.2 or later and jq (both on GitHub's Linux and macOS runners).
set -euo pipefail

fhirgen=${FHIRGEN_BIN:-fhirgen}
outputs=${GITHUB_OUTPUT:?run.sh writes step outputs to the file named by GITHUB_OUTPUT}
step_summary=${GITHUB_STEP_SUMMARY:-/dev/null}

fail() {
  echo "::error title=fhirgen::$1"
  exit "${2:-1}"
}

target=()
targets=0
if [[ -n ${INPUT_STORE:-} ]]; then
  target+=(--store "$INPUT_STORE")
  targets=$((targets + 1))
fi
if [[ -n ${INPUT_FHIR_URL:-} ]]; then
  target+=(--fhir-url "$INPUT_FHIR_URL")
  targets=$((targets + 1))
fi
if [[ ${INPUT_EMULATOR:-false} == true ]]; then
  target+=(--emulator)
  targets=$((targets + 1))
fi
if ((targets != 1)); then
  fail "set exactly one of the inputs store, fhir-url and emulator (got $targets)" 2
fi
if [[ ${INPUT_VERIFY:-false} == true && ${INPUT_EMULATOR:-false} == true ]]; then
  fail "verify needs a store that outlives the load; the emulator target is gone when it ends" 2
fi

workers=(--workers "${INPUT_WORKERS:-32}")
# Extra arguments are split on whitespace; quoting inside them is not interpreted.
extra=()
if [[ -n ${INPUT_ARGS:-} ]]; then
  read -r -a extra <<<"$INPUT_ARGS"
fi

# verify takes the extra arguments that shape the data set or reach the store, not the
# load-only ones (--mode, --bundle-size, --rate...); --input replaces count and seed.
data=(--count "${INPUT_COUNT:-1000}" --seed "${INPUT_SEED:-1}")
verify_extra=()
i=0
while ((i < ${#extra[@]})); do
  case ${extra[i]} in
    --input | --input=*) data=() ;;
  esac
  case ${extra[i]} in
    --as-of=* | --types=* | --shard=* | --input=* | --endpoint=* | --access-token=* | \
      --timeout=* | --max-retries=* | --http=*)
      verify_extra+=("${extra[i]}")
      ;;
    --as-of | --types | --shard | --input | --endpoint | --access-token | --timeout | \
      --max-retries | --http)
      verify_extra+=("${extra[i]}" "${extra[i + 1]:-}")
      i=$((i + 1))
      ;;
  esac
  i=$((i + 1))
done

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

status=0
"$fhirgen" load "${target[@]}" ${data[@]+"${data[@]}"} "${workers[@]}" --mode "${INPUT_MODE:-transaction}" \
  ${extra[@]+"${extra[@]}"} --json >"$scratch/load.json" || status=$?
echo "exit-code=$status" >>"$outputs"

if [[ ! -s $scratch/load.json ]]; then
  printf '### fhirgen load: exited %s before loading\n\nThe step log says why.\n' "$status" \
    >>"$step_summary"
  fail "fhirgen load exited $status without a summary (the log above says why)" "$status"
fi

jq -r '
  "stored=\(.stored)",
  "failed=\(.failed)",
  "not-sent=\(.not_sent)",
  "requests=\(.requests)",
  "retries=\(.retries)",
  "elapsed-seconds=\(.elapsed_seconds)",
  "resources-per-second=\(.resources_per_second)",
  "latency-p50-ms=\(.latency_ms.p50)",
  "latency-p99-ms=\(.latency_ms.p99)",
  "seed=\(.seed)",
  "summary=\(tojson)"
' "$scratch/load.json" >>"$outputs"

jq -r --argjson status "$status" '
  def cell: tostring | gsub("\\|"; "\\|") | gsub("\n"; " ");
  (if $status == 0 then "✅" else "❌" end) as $mark
  | "### \($mark) fhirgen load: \(.stored) stored, \(.failed) failed, \(.not_sent) not sent",
    "",
    "| | |",
    "|---|---|",
    "| target | \(.target | cell) |",
    "| mode, workers | \(.mode), \(.workers) |",
    "| stored | \(.stored) |",
    "| failed | \(.failed) |",
    "| not sent | \(.not_sent) |",
    "| requests (retries) | \(.requests) (\(.retries)) |",
    "| elapsed | \(.elapsed_seconds) s |",
    "| resources/s | \(.resources_per_second) |",
    "| latency p50 / p99 | \(.latency_ms.p50) / \(.latency_ms.p99) ms |",
    "| status codes | \(.status_counts | to_entries | map("\(.key): \(.value)") | join(", ") | cell) |",
    "| seed | \(.seed) |",
    (if .fatal_error then "| stopped | \(.fatal_error | cell) |" else empty end),
    ""
' "$scratch/load.json" >>"$step_summary"

if ((status != 0)); then
  fail "$(jq -r '"fhirgen load: \(.failed) failed, \(.not_sent) not sent" +
    (if .fatal_error then " (\(.fatal_error))" else "" end)' "$scratch/load.json")" "$status"
fi

if [[ ${INPUT_VERIFY:-false} == true ]]; then
  verified=0
  "$fhirgen" verify "${target[@]}" ${data[@]+"${data[@]}"} "${workers[@]}" \
    ${verify_extra[@]+"${verify_extra[@]}"} --json >"$scratch/verify.json" || verified=$?
  echo "verified=$([[ $verified == 0 ]] && echo true || echo false)" >>"$outputs"
  if [[ ! -s $scratch/verify.json ]]; then
    fail "fhirgen verify exited $verified without a report (the log above says why)" "$verified"
  fi
  jq -r '
    "#### \(if .ok then "✅" else "❌" end) fhirgen verify: \(.checked) of \(.expected) looked up",
    "",
    "| missing | duplicated | not checked | counts differ for |",
    "|---|---|---|---|",
    "| \(.missing.count) | \(.duplicated.count) | \(.unchecked.count) | \(.count_mismatches | join(", ")) |",
    ""
  ' "$scratch/verify.json" >>"$step_summary"
  if ((verified != 0)); then
    fail "$(jq -r '"fhirgen verify: \(.missing.count) missing, \(.duplicated.count) duplicated, \(.unchecked.count) not checked"' \
      "$scratch/verify.json")" "$verified"
  fi
fi
