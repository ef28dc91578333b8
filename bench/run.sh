#!/usr/bin/env bash
# Whole-run benchmarks, measured side by side in one go, printed as the README's table.
#
#   bench/run.sh            # release build, then every measurement (~6 minutes on 2 cores)
#   bench/run.sh faults     # only a store that throttles (quota) or fails at random (flaky)
#
# The latency-bound rows use `fhirgen serve --latency-ms 20 --sink` in its own process: it
# answers like a store but keeps and checks nothing, so that the client is measured, not the
# store. It reports its own mean answer time, from which the real ceiling (workers / latency)
# is quoted next to the nominal 3200/s. Memory rows load into a real (in-memory) store. CPU
# time and peak RSS come from /usr/bin/time for the client process alone. The Go baseline
# (bench/go-baseline) is the worker-pool loader fhirgen started from; it is built and
# measured when `go` is installed (Debian: apt-get install golang-go).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --quiet
BIN=${CARGO_TARGET_DIR:-target}/release/fhirgen
WORK=$(mktemp -d)
# start_sink runs in a command substitution (a subshell), so the stores it starts are noted
# in a file, not a variable, for cleanup to stop.
cleanup() {
    if [[ -f "$WORK/sinks" ]]; then
        while read -r pid; do kill "$pid" 2>/dev/null || true; done <"$WORK/sinks"
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Starts `fhirgen serve` with the given flags on a free port; prints its FHIR base.
start_sink() {
    local out="$WORK/sink.$RANDOM"
    "$BIN" serve --port 0 "$@" >"$out" 2>/dev/null &
    echo "$!" >>"$WORK/sinks"
    for _ in $(seq 100); do
        if grep -q listening "$out"; then
            grep -o 'http://[0-9.:]*' "$out" | head -1
            return
        fi
        sleep 0.05
    done
    echo "the sink did not start" >&2
    exit 1
}

reset() { curl -s -X POST "$1/_emulator/reset" >/dev/null; }
sink_stat() { curl -s "$1/_emulator/stats" | python3 -c "import json,sys; print(json.load(sys.stdin)['$2'])"; }

# Runs a command under /usr/bin/time; leaves its stdout in $WORK/out and "cpu_seconds rss_kib"
# in $WORK/time.
timed() {
    /usr/bin/time -f '%U %S %M' -o "$WORK/time.raw" "$@" >"$WORK/out"
    read -r user sys rss <"$WORK/time.raw"
    echo "$(python3 -c "print($user + $sys)") $rss" >"$WORK/time"
}
field() { python3 -c "import json,sys; print(json.load(open('$WORK/out'))['$1'])"; }
# A rate from the summary, to the nearest whole number.
rate() { python3 -c "import json,sys; print(round(json.load(open('$WORK/out'))['$1']))"; }
cpu() { cut -d' ' -f1 "$WORK/time"; }
rss_mib() { python3 -c "print(round($(cut -d' ' -f2 "$WORK/time") / 1024, 1))"; }
calc() { python3 -c "print($1)"; }

# 8. Riding a quota: a store that admits Q operations per fixed window and answers 429 with no
# Retry-After beyond it (Google's per-minute quota, in shorter windows). Each mode loads six
# windows' worth; the time the quota allows is count / (Q / window).
quota_rows=""
quota_row() {
    local mode=$1 ops=$2 window=$3 workers=$4 windows=6
    local store count
    store=$(start_sink --latency-ms 20 --quota-ops "$ops" --quota-window "$window")
    count=$((ops * windows))
    timed "$BIN" load --fhir-url "$store/fhir" --mode "$mode" --workers "$workers" --count "$count" --json --quiet
    local elapsed requests throttled failed bound
    elapsed=$(field elapsed_seconds)
    requests=$(field requests)
    throttled=$(python3 -c "import json; print(json.load(open('$WORK/out'))['status_counts'].get('429', 0))")
    failed=$(field failed)
    bound=$(calc "$count / ($ops / $window)")
    quota_rows+="| $mode, $workers workers | $ops per ${window} s | $count | $elapsed s = $(calc "round($elapsed / $bound, 3)")x the $bound s the quota allows | $throttled of $requests = $(calc "round($throttled / $requests * 100, 1)")% | $failed |"$'\n'
}

# 9. A flaky store: a share of writes refused at random (429 or 503, as `serve --fault-rate`
# answers, no Retry-After), side by side with none, create mode, 32 workers, 20 ms latency,
# into a real (in-memory) store: every resource must be stored, and the refusals must cost
# retries, not the pace.
flaky_rows=""
flaky_row() {
    local share=$1 count=20000
    local store
    store=$(start_sink --latency-ms 20 --fault-rate "$share" --fault-seed 1)
    timed "$BIN" load --fhir-url "$store/fhir" --mode create --count "$count" --json --quiet
    local rps held
    rps=$(rate resources_per_second)
    held=$(curl -s "$store/_emulator/stats" | python3 -c "import json,sys; print(sum(json.load(sys.stdin)['resources'].values()))")
    [[ $share == 0 ]] && flaky_base=$rps
    flaky_rows+="| $share | $rps resources/s = $(calc "round($rps / $flaky_base * 100, 1)")% of fault-free | $(field retries) | $(field stored) stored, $held held, $(field failed) failed |"$'\n'
}

fault_rows() {
    quota_row transaction 40000 5 32
    quota_row create 10000 5 64
    quota_row update 10000 5 64
    flaky_row 0
    flaky_row 0.2
    flaky_row 0.5
}

fault_tables() {
    cat <<TABLE
Riding a quota (20 ms latency, 429 without Retry-After once a window's operations are spent):

| mode | quota | resources | time | 429s | failed |
|---|---|---|---|---|---|
${quota_rows}
A flaky store (writes refused at random with 429 or 503, 20 ms latency, create mode, 32 workers,
20000 resources):

| refused at random | throughput | retries | stored |
|---|---|---|---|
${flaky_rows}
TABLE
}

# `bench/run.sh faults` measures only the rows of a store that throttles or fails.
if [[ ${1:-} == faults ]]; then
    fault_rows
    fault_tables
    exit 0
fi

SLOW=$(start_sink --latency-ms 20 --sink)
FAST=$(start_sink)

echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(rustc --version)" >&2

# 1. Latency-bound create mode: 64 workers, 20 ms store latency, ceiling 3200 requests/s.
reset "$SLOW"
timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers 64 --count 40000 --json --quiet
create64_rps=$(rate requests_per_second)
create64_requests=$(field requests)
create64_cpu_us=$(calc "round($(cpu) / $create64_requests * 1e6, 1)")
create64_inflight=$(sink_stat "$SLOW" max_in_flight)
# The sink's own mean answer time (20 ms plus its wake-up): the ceiling a client can reach.
sink_ms=$(sink_stat "$SLOW" mean_latency_ms)
true_ceiling=$(calc "round(64 / $sink_ms * 1000)")
# 1b. The same on two runtime threads, a thread per core as other commands run (src/runtime.rs).
reset "$SLOW"
TOKIO_WORKER_THREADS=2 timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers 64 --count 40000 --json --quiet
create64_two_threads_cpu_us=$(calc "round($(cpu) / $(field requests) * 1e6, 1)")

# 2. The Go worker-pool baseline on the same sink, same workers, smaller resources.
go_rps="n/a"; go_cpu_us="n/a"; go1_cpu_us="n/a"
if command -v go >/dev/null; then
    (cd bench/go-baseline && go build -o "$WORK/go-baseline" .)
    reset "$SLOW"
    timed "$WORK/go-baseline" -url "$SLOW/fhir" -count 40000 -workers 64
    go_rps=$(rate requests_per_second)
    go_cpu_us=$(calc "round($(cpu) / 40000 * 1e6, 1)")
    # Go schedules its goroutines on one thread per core too; on one thread, as fhirgen's load:
    reset "$SLOW"
    GOMAXPROCS=1 timed "$WORK/go-baseline" -url "$SLOW/fhir" -count 40000 -workers 64
    go1_cpu_us=$(calc "round($(cpu) / 40000 * 1e6, 1)")
fi

# 2b. The HTTP client alone, POSTing the Go baseline's Patient: reqwest as fhirgen sets it up,
# and the bare hyper-util client fhirgen used before it. What a request costs before fhirgen
# generates, checks or records anything.
cargo build --release --locked --quiet --example http_floor
reset "$SLOW"
timed "${CARGO_TARGET_DIR:-target}"/release/examples/http_floor "$SLOW/fhir" 40000 reqwest
floor_cpu_us=$(calc "round($(cpu) / 40000 * 1e6, 1)")
reset "$SLOW"
timed "${CARGO_TARGET_DIR:-target}"/release/examples/http_floor "$SLOW/fhir" 40000 hyper
hyper_floor_cpu_us=$(calc "round($(cpu) / 40000 * 1e6, 1)")

# 3. Transaction mode against create mode, 32 workers, 20 ms latency.
reset "$SLOW"
timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers 32 --count 20000 --json --quiet
create32_res=$(rate resources_per_second)
reset "$SLOW"
timed "$BIN" load --fhir-url "$SLOW/fhir" --mode transaction --workers 32 --count 200000 --json --quiet
tx32_res=$(rate resources_per_second)

# 3b. HTTP/1.1 connection pools against HTTP/2 multiplexing on one connection (h2c here).
reset "$SLOW"
timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers 64 --count 20000 --http 2 --json --quiet
h2_create_rps=$(rate requests_per_second)
h2_create_cpu_us=$(calc "round($(cpu) / $(field requests) * 1e6, 1)")
reset "$SLOW"
timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers 64 --count 20000 --http 1 --json --quiet
h1_create_rps=$(rate requests_per_second)
h1_create_cpu_us=$(calc "round($(cpu) / $(field requests) * 1e6, 1)")
tx_over_http() {
    reset "$SLOW"
    timed "$BIN" load --fhir-url "$SLOW/fhir" --mode transaction --workers 32 --count 200000 --http "$1" --json --quiet
}
tx_over_http 1
h1_tx_res=$(rate resources_per_second)
h1_tx_cpu_us=$(calc "round($(cpu) / 200000 * 1e6, 2)")
tx_over_http 2
h2_tx_res=$(rate resources_per_second)
h2_tx_cpu_us=$(calc "round($(cpu) / 200000 * 1e6, 2)")

# 3c. The defaults: workers in create mode, bundle size in transaction mode, at 20 ms.
workers_rows=""
for w in 8 16 32 64 128 256; do
    reset "$SLOW"
    timed "$BIN" load --fhir-url "$SLOW/fhir" --mode create --workers $w --count $((w * 250)) --json --quiet
    workers_rows+="| $w | $(rate requests_per_second) requests/s = $(calc "round($(rate requests_per_second) / ($w / $sink_ms * 1000) * 100, 1)")% of $w/latency | $(calc "round($(cpu) / $(field requests) * 1e6, 1)") µs | $(rss_mib) MiB |"$'\n'
done
bundle_rows=""
for b in 10 25 50 100 200 500; do
    reset "$SLOW"
    timed "$BIN" load --fhir-url "$SLOW/fhir" --mode transaction --workers 32 --bundle-size $b --count 100000 --json --quiet
    bundle_rows+="| $b | $(rate resources_per_second) resources/s | $(calc "round($(cpu) / 100000 * 1e6, 2)") µs | $(rss_mib) MiB |"$'\n'
done

# 4. Generation to NDJSON: resources per CPU-second, and peak memory for a million.
timed "$BIN" generate --count 1000000 --output /dev/null
gen_per_cpu_s=$(calc "round(1000000 / $(cpu))")
gen_rss=$(rss_mib)

# 4b. Generation into Cloud Storage (the emulator's, in its own process) next to a gzip file:
# the same million resources, wall time, upload rate and the generator's peak RSS.
STORAGE=$(start_sink)
started=$(date +%s.%N)
timed "$BIN" generate --count 1000000 --as-of 2025-06-01 --output "$WORK/big.ndjson.gz"
gz_s=$(calc "round($(date +%s.%N) - $started, 2)"); gz_cpu=$(cpu); gz_rss=$(rss_mib)
rm "$WORK/big.ndjson.gz"
started=$(date +%s.%N)
STORAGE_EMULATOR_HOST="${STORAGE#http://}" FHIRGEN_STATE_DIR="$WORK/state" \
    timed "$BIN" generate --count 1000000 --as-of 2025-06-01 -o gs://bench/run/
gs_s=$(calc "round($(date +%s.%N) - $started, 2)"); gs_cpu=$(cpu); gs_rss=$(rss_mib)
gs_mb=$(curl -s "$STORAGE/_emulator/storage" | python3 -c "import json,sys; print(round(json.load(sys.stdin)['bytes_received'] / 1e6))")

# 5. Peak memory loading 200k resources (default 32 workers, and 64 in update mode).
reset "$FAST"
timed "$BIN" load --fhir-url "$FAST/fhir" --count 200000 --json --quiet
load_tx_rss=$(rss_mib)
reset "$FAST"
timed "$BIN" load --fhir-url "$FAST/fhir" --mode update --workers 64 --count 200000 --json --quiet
load_update_rss=$(rss_mib)

# 6. A 1 GB-class input streamed through --input - (keys of what was read and store ids grow with it).
"$BIN" generate --count 1000000 --seed 5 >"$WORK/big.ndjson"
big_mib=$(( $(stat -c %s "$WORK/big.ndjson") / 1048576 ))
reset "$FAST"
timed "$BIN" load --fhir-url "$FAST/fhir" --mode update --workers 64 --input - --json --quiet <"$WORK/big.ndjson"
stream_rss=$(rss_mib)
stream_res=$(rate resources_per_second)
rm "$WORK/big.ndjson"

# 7. The emulator: the README's main job, and its request rate one resource per request.
timed "$BIN" load --emulator --count 100000 --workers 64 --json --quiet
emu_main_s=$(field elapsed_seconds)
emu_main_res=$(rate resources_per_second)
timed "$BIN" load --emulator --mode create --count 50000 --workers 64 --json --quiet
emu_create_rps=$(rate requests_per_second)

fault_rows

cat <<TABLE
| measurement | result | target |
|---|---|---|
| create mode, 64 workers, 20 ms latency | $create64_rps requests/s = $(calc "round($create64_rps / 3200 * 100, 1)")% of the 3200/s ceiling ($(calc "round($create64_rps / $true_ceiling * 100, 1)")% of the $true_ceiling/s the sink's measured $sink_ms ms allow); max in flight $create64_inflight | >= 95%, never > 64 |
| Go worker-pool baseline, same sink | $go_rps requests/s = $(calc "round($go_rps / 3200 * 100, 1)" 2>/dev/null || echo "n/a")% | |
| client CPU per POST (generation included) | fhirgen $create64_cpu_us µs, Go baseline $go_cpu_us µs ($(calc "round($create64_cpu_us / $go_cpu_us, 2)" 2>/dev/null || echo "n/a")x); on two runtime threads fhirgen $create64_two_threads_cpu_us µs, on one Go (GOMAXPROCS=1) $go1_cpu_us µs; the client alone on Go's body, one thread: reqwest $floor_cpu_us µs, hyper-util (fhirgen's client before reqwest) $hyper_floor_cpu_us µs | fhirgen <= Go |
| transaction vs create, 32 workers, 20 ms | $tx32_res vs $create32_res resources/s = $(calc "round($tx32_res / $create32_res, 1)")x | >= 10x |
| generate 1M resources to NDJSON | $gen_per_cpu_s resources per CPU-second, peak RSS $gen_rss MiB | >= 500k/CPU-s, < 48 MiB |
| generate 1M resources \`-o gs://\` (emulator in its own process) next to \`-o FILE.ndjson.gz\` | gs://: $gs_s s, $(calc "round(1e6 / $gs_s)") resources/s, $(calc "round($gs_mb / $gs_s)") MB/s uploaded ($gs_mb MB), $gs_cpu CPU-s, peak RSS $gs_rss MiB; gzip file: $gz_s s, $(calc "round(1e6 / $gz_s)") resources/s, $gz_cpu CPU-s, peak RSS $gz_rss MiB; $(calc "round($gz_s / $gs_s, 2)")x the file's speed | >= 0.8x, RSS < 64 MiB + chunks in flight |
| load 200k resources, peak RSS | transaction, 32 workers: $load_tx_rss MiB; update, 64 workers: $load_update_rss MiB | < 48 MiB |
| \`load --input -\`, $big_mib MiB of NDJSON (1M resources), update mode | peak RSS $stream_rss MiB, $stream_res resources/s | flat |
| \`load --emulator --count 100000 --workers 64\` | $emu_main_s s, $emu_main_res resources/s | seconds |
| emulator, create mode, 64 workers | $emu_create_rps requests/s (client and store on the same 2 cores) | not the bottleneck |
TABLE

cat <<TABLE

HTTP/1.1 connection pools against HTTP/2 multiplexing, same sink:

| mode | \`--http 1\` (a connection per worker) | \`--http 2\` (one connection) |
|---|---|---|
| create, 64 workers | $h1_create_rps requests/s, $h1_create_cpu_us µs CPU per request | $h2_create_rps requests/s, $h2_create_cpu_us µs |
| transaction, 32 workers | $h1_tx_res resources/s, $h1_tx_cpu_us µs CPU per resource | $h2_tx_res resources/s, $h2_tx_cpu_us µs |

$(fault_tables)

Workers, create mode, 20 ms:

| --workers | throughput | CPU per request | peak RSS |
|---|---|---|---|
${workers_rows}
Bundle size, transaction mode, 32 workers, 20 ms:

| --bundle-size | throughput | CPU per resource | peak RSS |
|---|---|---|---|
${bundle_rows}
TABLE
