#!/usr/bin/env bash
# bench/measure.sh — latchkey's own figures for docs/benchmarks.md (the side
# by side with Postfix is bench/compare.sh).
#
#   bench/measure.sh [--workdir /tmp/latchkey-measure] [--runs 3] [SECTION...]
#
# Sections (default: all, in this order):
#   gobench   Go benchmarks: DKIM, raw signatures, queue group commit,
#             classification, DSN parsing, fsync rate, Badger synced commit
#             CPU, URL hashing (-count=RUNS)
#   ceiling   the load tool straight to its sink: the harness's own ceiling
#   ed25519   e2e closed loop, 8 clients, 10,000 messages, Ed25519-only signing
#   dual      the same with the shipped dual RSA + Ed25519 signing
#   workers   rsa-2048 closed loop with 10 reset delivery workers instead of 4
#   backlog   resets at 20 msg/s behind 20,000 bulk messages queued for a slow MX
#   rss100k   100,000 messages submitted over SMTP to an MX that defers all: RSS
#   restart   restart on that queue, then on 1,000,000 (filled directly), RUNS times
#   profile   CPU profile of the relay in process, closed loop, rsa-2048
#
# Everything listens on 127.0.0.0/8. Every report (JSON or text) is written
# under WORKDIR/results. Run it on an otherwise idle machine.
set -euo pipefail

WORK=/tmp/latchkey-measure
RUNS=3
SECTIONS=()
while [ $# -gt 0 ]; do
	case "$1" in
	--workdir) WORK=$2; shift ;;
	--runs) RUNS=$2; shift ;;
	-h|--help) sed -n '2,20p' "$0"; exit 0 ;;
	*) SECTIONS+=("$1") ;;
	esac
	shift
done
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(gobench ceiling ed25519 dual workers backlog rss100k restart profile)

REPO=$(cd "$(dirname "$0")/.." && pwd)
R="$WORK/results"
mkdir -p "$WORK/bin" "$R"
log() { printf '%s measure.sh: %s\n' "$(date +%T)" "$*" >&2; }
log "load average: $(cut -d' ' -f1-3 /proc/loadavg) (want < 0.5 before measuring)"

(cd "$REPO" && go build ${LATCHKEY_TAGS:+-tags "$LATCHKEY_TAGS"} -o "$WORK/bin/latchkey" ./cmd/latchkey && go build -o "$WORK/bin/latchkey-load" ./cmd/latchkey-load)
LK="$WORK/bin/latchkey"
LOAD="$WORK/bin/latchkey-load"

for s in "${SECTIONS[@]}"; do
	case "$s" in
	gobench)
		log "Go benchmarks"
		cd "$REPO"
		go test -run='^$' -bench='Sign|Raw' -cpu=1,2 -count="$RUNS" ./dkim | tee "$R/bench-dkim.txt"
		go test -run='^$' -bench=EnqueueParallel -benchtime=2000x -count="$RUNS" ./queue | tee "$R/bench-queue.txt"
		go test -run='^$' -bench=Classify -count="$RUNS" ./policy | tee "$R/bench-policy.txt"
		go test -run='^$' -bench='Parse$' -count="$RUNS" ./bounce | tee "$R/bench-bounce.txt"
		LATCHKEY_BENCH_DIR="$WORK" go test -run='^$' -bench='Fsync|BadgerSync' -count="$RUNS" ./bench | tee "$R/bench-fsync.txt"
		go test -run='^$' -bench='URL' -count="$RUNS" ./audit ./bench | tee "$R/bench-urls.txt"
		cd - >/dev/null
		;;
	ceiling)
		for i in $(seq "$RUNS"); do
			log "harness ceiling, run $i"
			"$LOAD" run -json -label "harness ceiling #$i" -direct -conns 8 -n 20000 >"$R/ceiling-$i.json"
		done
		;;
	workers)
		sed '0,/^workers = 4/s//workers = 10/' "$REPO/conf/policy.toml" >"$WORK/policy-workers10.toml"
		for i in $(seq "$RUNS"); do
			log "closed loop, rsa, 10 reset workers, run $i"
			"$LOAD" run -json -label "latchkey rsa workers=10 closed #$i" -latchkey "$LK" -dkim rsa -policy "$WORK/policy-workers10.toml" \
				-conns 8 -n 10000 -verify-every 10 >"$R/latchkey-workers10-closed-$i.json" || log "run reported failures"
		done
		;;
	ed25519|dual)
		algo=ed25519; [ "$s" = dual ] && algo=both
		for i in $(seq "$RUNS"); do
			log "closed loop, $algo, run $i"
			"$LOAD" run -json -label "latchkey $s closed #$i" -latchkey "$LK" -dkim "$algo" -conns 8 -n 10000 -verify-every 10 \
				>"$R/latchkey-$s-closed-$i.json" || log "run reported failures"
		done
		;;
	backlog)
		log "resets at 20 msg/s behind 20,000 bulk messages for a slow MX"
		"$LOAD" run -json -label "reset behind 20k bulk" -latchkey "$LK" -dkim rsa -prefill-bulk 20000 -bulk-delay 1s \
			-rate 20 -n 600 -conns 8 -verify-every 10 >"$R/latchkey-backlog.json" || log "run reported failures"
		;;
	rss100k)
		log "100,000 messages to an MX that defers everything"
		rm -rf "$WORK/q100k"
		"$LOAD" run -json -label "100k queued" -latchkey "$LK" -dkim rsa -workdir "$WORK/q100k" -mx-defer -settle 30s \
			-mix reset=0,bulk=1 -conns 8 -n 100000 >"$R/latchkey-rss100k.json" || log "run reported failures"
		;;
	restart)
		[ -d "$WORK/q100k" ] || { log "restart needs the rss100k section first"; exit 1; }
		for i in $(seq "$RUNS"); do
			log "restart with 100k queued, run $i"
			"$LOAD" restart -json -latchkey "$LK" -workdir "$WORK/q100k" >"$R/latchkey-restart100k-$i.json"
		done
		log "filling the queue to 1,000,000"
		"$LOAD" fill -workdir "$WORK/q100k" -n 900000 | tee "$R/latchkey-fill1m.txt"
		for i in $(seq "$RUNS"); do
			log "restart with 1M queued, run $i"
			"$LOAD" restart -json -latchkey "$LK" -workdir "$WORK/q100k" >"$R/latchkey-restart1m-$i.json"
		done
		grep '"queue loaded"' "$WORK/q100k/relay.log" | tail -n "$RUNS" >"$R/latchkey-restart-queue-loaded.txt"
		;;
	profile)
		log "CPU profile, in process, closed loop, rsa-2048"
		"$LOAD" run -label "profile" -inprocess -dkim rsa -conns 8 -n 10000 -verify-every 10 -cpuprofile "$R/relay-rsa.prof" \
			>"$R/profile-run.txt" || true
		go tool pprof -top -nodecount=40 "$LOAD" "$R/relay-rsa.prof" >"$R/profile-top.txt" 2>/dev/null
		go tool pprof -top -cum -nodecount=120 "$LOAD" "$R/relay-rsa.prof" >"$R/profile-cum.txt" 2>/dev/null
		;;
	*) log "unknown section $s"; exit 2 ;;
	esac
done
log "done; results in $R"
