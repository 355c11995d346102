#!/usr/bin/env bash
# bench-device.sh DIR — the full `teegate bench` on a lent machine, from
# prebuilt static binaries (no Go toolchain, no network needed there).
#
# DIR holds teegate (or teegate.gz) and, optionally, e2e.test (or
# e2e.test.gz): `make device-bench-bin` builds both into bin/device with
# CGO_ENABLED=0, stripped and gzipped (about 21 + 25 MB). Results go to
# $OUT (default ./bench-out): bench.json (the report), bench.log
# (progress), stack.prof (CPU profile of the stack at peak, openai
# engine), machine.txt, and e2e-bench.txt when e2e.test is there.
# Finishes in about 4-5 minutes; each step has its own time limit.
set -uo pipefail
dir=${1:-bin/device}
out=${OUT:-$PWD/bench-out}
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for f in teegate e2e.test; do
	if [ -f "$dir/$f.gz" ]; then
		gunzip -c "$dir/$f.gz" >"$work/$f"
	elif [ -f "$dir/$f" ]; then
		cp "$dir/$f" "$work/$f"
	else
		continue
	fi
	chmod +x "$work/$f"
done
[ -x "$work/teegate" ] || { echo "bench-device: no teegate or teegate.gz in $dir" >&2; exit 2; }

# Each held stream is a socket in the client and one in the stack.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
{
	echo "date: $(date -u +%FT%TZ)"
	echo "nproc: $(nproc)"
	grep -m1 'model name' /proc/cpuinfo
	echo "mem: $(grep MemTotal /proc/meminfo)"
	echo "load: $(cat /proc/loadavg)"
	echo "nofile: $(ulimit -n)"
	echo "commit: $(cat "$dir/COMMIT" 2>/dev/null || echo unknown)"
	"$work/teegate" version 2>/dev/null || true
} >"$out/machine.txt" 2>&1
cat "$out/machine.txt"

# The side-by-side run (rates 1000, 500, 2000; peak; overload at 2× peak;
# TTFT; 10,000 held streams), about 3-4 minutes.
start=$(date +%s)
# BENCH_ARGS adds flags (a try-out: BENCH_ARGS="--quick --streams 100").
timeout 330 "$work/teegate" bench ${BENCH_ARGS:-} --json --cpuprofile "$out/stack.prof" >"$out/bench.json" 2>"$out/bench.log"
rc=$?
echo "bench: exit $rc after $(($(date +%s) - start)) s"
tail -n 5 "$out/bench.log"

# The request path one request at a time (quiet-machine figure), if the
# test binary came along and time is left.
if [ -x "$work/e2e.test" ] && [ $(($(date +%s) - start)) -lt 270 ]; then
	(cd tests/e2e 2>/dev/null || true
		timeout 60 "$work/e2e.test" -test.run '^$' -test.bench 'BenchmarkEngineDirect$|BenchmarkWorkerOverNATS$|BenchmarkRoundTrip$|BenchmarkRoundTripStream$' \
			-test.benchmem -test.benchtime ${E2E_BENCHTIME:-2s} -test.count 2) >"$out/e2e-bench.txt" 2>&1
	echo "e2e benchmarks: exit $?"
	grep '^Benchmark' "$out/e2e-bench.txt" || true
fi
# The headline numbers, for the log.
grep -E '^  "(direct_rps|stack_rps|builtin_rps|peak_ratio|builtin_peak_ratio|added_p50_ms|added_p99_ms|ttft_added_p50_ms|stream_rss_kib_per_stream|streams_open|overload_goodput_ratio|overload_refused|overload_refused_p99_ms|overload_timeouts|errors)"' "$out/bench.json" | head -n 20
exit $rc
