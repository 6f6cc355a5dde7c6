#!/usr/bin/env bash
# Local delivery rate: smtp-source → ternd → Maildir new/, timed from the
# first connection until every message is in new/. A benchmark, not a test.
# Usage: tests/bench/local-delivery.sh [SESSIONS] [MESSAGES] [SIZE]
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-10}; messages=${2:-2000}; size=${3:-4K}
cargo build --release --bins --examples -q
dir=$(mktemp -d /tmp/tern-bench-XXXXXX)
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
printf 'alice\n' > "$dir/users"
cat > "$dir/tern.conf" <<CONF
hostname = localhost
listen = 127.0.0.1:0
spool = $dir/spool
local_domains = localhost
local_users = $dir/users
mailbox = $dir/mail/%u/
max_sessions = 200
max_sessions_per_ip = 200
CONF
# As root, ternd drops to its user, which delivers mail for alice (no such account) itself.
if [ "$(id -u)" = 0 ]; then
    echo "user = ${BENCH_TERN_USER:-nobody}" >>"$dir/tern.conf"
    chmod 755 "$dir"; mkdir -p "$dir/mail"; chown "${BENCH_TERN_USER:-nobody}" "$dir/mail"
fi
./target/release/ternd -d -f "$dir/tern.conf" 2>"$dir/log" & pid=$!
for _ in $(seq 100); do grep -q "listening on" "$dir/log" && break; sleep 0.05; done
port=$(grep -o 'listening on 127.0.0.1:[0-9]*' "$dir/log" | cut -d: -f2)
start=$(date +%s.%N)
./target/release/examples/smtp-source -c "$sessions" -m "$messages" -s "$size" -t alice@localhost -w 120 "127.0.0.1:$port" | grep RESULT
while [ "$(ls "$dir/mail/alice/new" 2>/dev/null | wc -l)" -lt "$messages" ]; do sleep 0.02; done
end=$(date +%s.%N)
echo "local delivery: $messages messages of $size from $sessions sessions into Maildir in $(echo "$end - $start" | bc) s: $(echo "scale=1; $messages / ($end - $start)" | bc) msgs/s"
