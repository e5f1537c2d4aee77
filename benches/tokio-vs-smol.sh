#!/usr/bin/env bash
# curl, 50 small uploads then 50 small downloads in ONE TLS 1.3 session, against the tokio example
# (examples/tokio_server.rs) and the smol server (the ftps-server binary), in the same run, alternating rounds.
# Prints the median seconds per server and the ratio smol/tokio (1.0: the tokio frontend is as fast; issue 15
# asks for at least 0.5). A measurement to read, never a pass/fail test.
#
#   benches/tokio-vs-smol.sh [ROUNDS] [PROFILE]      (defaults: 7 release; PROFILE=debug to skip the build)
set -euo pipefail

ROUNDS=${1:-7}
PROFILE=${2:-release}
FILES=50
SIZE=4096
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
flag=$([ "$PROFILE" = release ] && echo --release || true)
cargo build -q $flag --manifest-path "$root/Cargo.toml" -p ftps-server-smol --bin ftps-server --example tokio_server
bin=$target/$PROFILE

work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

mkdir -p "$work/local" "$work/tokio" "$work/smol" "$work/state"
names=()
for i in $(seq -w 1 $FILES); do
    head -c $SIZE /dev/urandom >"$work/local/f$i.bin"
    names+=("f$i.bin")
done
glob="$work/local/{$(IFS=,; echo "${names[*]}")}"

# The tokio example: its address is the first line of its stdout.
"$bin/examples/tokio_server" 0 "$work/tokio" >"$work/tokio.out" 2>/dev/null &
pids+=($!)
# The smol server: a generated certificate and users file in its state directory, logs off, user demo/demo
# (its argon2id check costs one login per session: build in release to compare).
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat >"$work/ftps-server.toml" <<EOF
root = "$work/smol"
state_dir = "$work/state"
users_file = "$work/state/users.toml"

[[listener]]
address = "127.0.0.1:$port"
mode = "explicit"
passive_ports = "$((52000 + port % 5000))-$((52200 + port % 5000))"

[log]
protocol = false
transfers = false

# The tokio example's LocalStorage does not fsync either: compare frontends, not disks.
[storage]
fsync = false
EOF
FTPS_PASSWORD=demo "$bin/ftps-server" --config "$work/ftps-server.toml" user add demo >/dev/null
RUST_LOG=warn "$bin/ftps-server" --config "$work/ftps-server.toml" >/dev/null 2>"$work/smol.log" &
pids+=($!)
for _ in $(seq 100); do
    [ -s "$work/tokio.out" ] && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
done
tokio_addr=$(head -1 "$work/tokio.out" | sed 's/^listening on //')
smol_addr=127.0.0.1:$port

# One session: the uploads, then (--next, same connection) the downloads.
session() {
    local addr=$1 round=$2
    local tls=(--silent --show-error --ssl-reqd --insecure --tlsv1.3 --user demo:demo)
    curl "${tls[@]}" --ftp-create-dirs -T "$glob" "ftp://$addr/r$round/" \
        --next "${tls[@]}" --create-dirs "ftp://$addr/r$round/f[01-$FILES].bin" -o "$work/down/$addr-$round/f#1.bin"
}

seconds() {
    local start end
    start=$(date +%s.%N)
    session "$1" "$2"
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l
}

median() { sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

session "$tokio_addr" warm >/dev/null
session "$smol_addr" warm >/dev/null
: >"$work/tokio.times"
: >"$work/smol.times"
for round in $(seq "$ROUNDS"); do
    seconds "$tokio_addr" "$round" >>"$work/tokio.times"
    seconds "$smol_addr" "$round" >>"$work/smol.times"
done
for server in tokio smol; do
    for i in $(seq -w 1 $FILES); do
        cmp -s "$work/local/f$i.bin" "$work/$server/r1/f$i.bin" || { echo "$server: upload f$i differs" >&2; exit 1; }
    done
done
tokio_median=$(median <"$work/tokio.times")
smol_median=$(median <"$work/smol.times")
echo "curl, $FILES uploads + $FILES downloads of $SIZE bytes in one TLS 1.3 session, median of $ROUNDS rounds ($PROFILE):"
printf '  tokio_server  %.3f s  (%.0f files/s)\n' "$tokio_median" "$(echo "2 * $FILES / $tokio_median" | bc -l)"
printf '  ftps-server   %.3f s  (%.0f files/s)\n' "$smol_median" "$(echo "2 * $FILES / $smol_median" | bc -l)"
printf '  ratio (smol time / tokio time; 1.0 = as fast): %.2f\n' "$(echo "$smol_median / $tokio_median" | bc -l)"
