#!/bin/sh
# Runs every cargo fuzz target for SECONDS each (default 600), one after another, over its
# corpus in fuzz/corpus/<target>/ (new inputs are added there; minimise with
# `cargo +nightly fuzz cmin <target>` before committing them). Prints, per target, the
# inputs executed and the crashes found (artifacts written to fuzz/artifacts/<target>/), and
# exits non-zero if any target crashed. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz --locked`). Usage: fuzz/run.sh [SECONDS]
set -eu

seconds=${1:-600}
fuzz=$(cd "$(dirname "$0")" && pwd)
targets="policy_parse resp_reply api_request envfile_round_trip mysql_answer amqp_login rabbitmq_answer"

cd "$fuzz"
cargo +nightly fuzz build
bin_dir=$fuzz/target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release

# libFuzzer with -jobs writes each job's output to fuzz-<job>.log in its working directory.
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

summary=""
failed=0
for target in $targets; do
    mkdir -p "$fuzz/corpus/$target" "$fuzz/artifacts/$target"
    mkdir "$logs/$target"
    touch "$logs/$target/start"
    echo "== $target: ${seconds}s"
    (
        cd "$logs/$target"
        "$bin_dir/$target" "$fuzz/corpus/$target" \
            -max_total_time="$seconds" -jobs=1 -workers=1 -rss_limit_mb=2048 -timeout=10 \
            -print_final_stats=1 -artifact_prefix="$fuzz/artifacts/$target/" >/dev/null 2>&1
    ) || true
    log=$logs/$target/fuzz-0.log
    tail -n 5 "$log" 2>/dev/null || true
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" 2>/dev/null | tail -n 1)
    if [ -z "$executions" ]; then
        executions=$(sed -n 's/^#\([0-9]*\).*DONE.*/\1/p' "$log" 2>/dev/null | tail -n 1)
    fi
    crashes=$(find "$fuzz/artifacts/$target" -type f -newer "$logs/$target/start" \
        \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) | wc -l)
    corpus=$(find "$fuzz/corpus/$target" -type f | wc -l)
    line=$(printf '%-20s %6ss  %12s executions  %3d crashes  %5d corpus files' \
        "$target" "$seconds" "${executions:-?}" "$crashes" "$corpus")
    summary="$summary$line
"
    if [ "$crashes" -gt 0 ] || [ -z "$executions" ]; then
        failed=1
        grep -E '^(==[0-9]+==|thread|panicked|SUMMARY)' "$log" | head -n 20 || true
    fi
done

echo
printf '%s' "$summary"
exit "$failed"
