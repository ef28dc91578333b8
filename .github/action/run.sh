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
# Extra arguments are split on whitespace, newlines included (a YAML `args: |` block has one
# flag per line); quoting inside them is not interpreted.
extra=()
if [[ -n ${INPUT_ARGS:-} ]]; then
  read -r -d '' -a extra <<<"$INPUT_ARGS" || true
fi

# The options `fhirgen $1` takes, from its help, one per line: `--name` for a switch, `--name=`
# for one that takes a value, the short form too (`-w=`).
options_of() {
  "$fhirgen" "$1" --help | awk '{
    match($0, /^ */)
    if (RLENGTH < 2 || RLENGTH > 6 || substr($0, RLENGTH + 1, 1) != "-") next
    names = ""; value = ""
    for (i = 1; i <= NF; i++) {
      field = $i
      if (field !~ /^-/) { if (field ~ /^</) value = "="; break }
      sub(/,$/, "", field)
      sub(/\.\.\.$/, "", field)
      names = names " " field
    }
    count = split(names, each, " ")
    for (j = 1; j <= count; j++) print each[j] value
  }'
}
load_options=" $(options_of load | tr '\n' ' ') "
verify_options=" $(options_of verify | tr '\n' ' ') "

# verify gets every extra argument it takes too: what shapes the data set (--as-of, --types,
# --input...) and what reaches the store (credentials, CAs, proxies' settings, timeouts,
# throttle waits); not the load's own (--mode, --bundle-size, --rate...). --input replaces
# count and seed.
data=(--count "${INPUT_COUNT:-1000}" --seed "${INPUT_SEED:-1}")
verify_extra=()
i=0
while ((i < ${#extra[@]})); do
  argument=${extra[i]}
  name=${argument%%=*}
  taken=("$argument")
  case $argument in
    --input | --input=*) data=() ;;
  esac
  # A value given apart (`--timeout 30`) goes with its option.
  if [[ $argument != *=* && $load_options == *" $name= "* ]]; then
    taken+=("${extra[i + 1]:-}")
    i=$((i + 1))
  fi
  if [[ $verify_options == *" $name "* || $verify_options == *" $name= "* ]]; then
    verify_extra+=("${taken[@]}")
  fi
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

# A seed is a 64-bit integer, which jq may round (it reads numbers as doubles): taken as text.
seed=$(sed -nE 's/.*"seed":("?[0-9]+"?|null).*/\1/p' "$scratch/load.json" | tr -d '"')

jq -r '
  "stored=\(.stored)",
  "failed=\(.failed)",
  "not-sent=\(.not_sent)",
  "requests=\(.requests)",
  "retries=\(.retries)",
  "elapsed-seconds=\(.elapsed_seconds)",
  "resources-per-second=\(.resources_per_second)",
  "latency-p50-ms=\(.latency_ms.p50)",
  "latency-p99-ms=\(.latency_ms.p99)"
' "$scratch/load.json" >>"$outputs"
# As fhirgen printed it (one line), not as jq would print it back.
printf 'seed=%s\nsummary=%s\n' "$seed" "$(tr -d '\n' <"$scratch/load.json")" >>"$outputs"

jq -r --argjson status "$status" --arg seed "$seed" '
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
    "| seed | \($seed) |",
    (if .fatal_error then "| stopped | \(.fatal_error | cell) |" else empty end),
    ""
' "$scratch/load.json" >>"$step_summary"

if ((status != 0)); then
  fail "$(jq -r '"fhirgen load: \(.failed) failed, \(.not_sent) not sent" +
    (if .fatal_error then " (\(.fatal_error))" else "" end)' "$scratch/load.json")" "$status"
fi

if [[ ${INPUT_VERIFY:-false} == true ]]; then
  # The data set the load used: `seed: random` picked one, and its summary says which.
  if ((${#data[@]} > 0)); then
    data=(--count "${INPUT_COUNT:-1000}" --seed "$seed")
  fi
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
