#!/usr/bin/env bash
# Issue 18's measurement: ftps-server on the S3 backend against `rclone copy` straight to the same S3 server, in
# one run. moto's server (PyPI `moto[server]`) on loopback is the S3 server for both, so the ratio says what the
# FTPS hop costs, not how fast moto is. Also reports the server's peak RSS during the large upload.
#
#   bash benches/s3_e2e.sh [SIZE_MIB] [FILES]      (defaults: 1024 MiB, 1000 × 4 KiB)
#
# Needs release builds of ftps-server and ftps (built here, into $CARGO_TARGET_DIR if set), python3 with
# moto[server], and rclone. `cargo xtask bench s3 [SIZE_MIB] [FILES]` runs this script.
#
# The download row compares `ftps get` with `rclone cat`, which is one plain GET (no ranges, no parallel streams:
# checked with --dump headers). The CPU line says where the time goes: on a 2-core machine moto, the server and
# the client share the cores, so the FTPS hop's TLS shows as wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
size_mib=${1:-1024}
files=${2:-1000}
cargo build --release -q -p ftps-server-smol -p ftps-client-blocking --bins
bin=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d /dev/shm/ftps-s3-bench.XXXXXX)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
[ -n "${KEEP_WORK:-}" ] && trap - EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }
# CPU seconds (user + system) a running process has used so far.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat"; }

s3_port=$(free_port)
python3 -m moto.server -p "$s3_port" > "$work/moto.log" 2>&1 &
moto=$!
pids+=($moto)
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
cat > "$work/rclone.conf" <<EOF
[s3]
type = s3
provider = Other
access_key_id = testing
secret_access_key = testing
endpoint = http://127.0.0.1:$s3_port
region = us-east-1
force_path_style = true
EOF
rc() { rclone --config "$work/rclone.conf" "$@"; }
for _ in $(seq 50); do rc mkdir s3:bench 2>/dev/null && break; sleep 0.2; done

ftp_port=$(free_port)
cat > "$work/server.toml" <<EOF
root = "$work/unused-root"
state_dir = "$work/state"
[[listener]]
address = "127.0.0.1:$ftp_port"
passive_ports = "46000-46050"
[storage]
backend = "s3"
endpoint = "http://127.0.0.1:$s3_port"
bucket = "bench"
prefix = "ftp"
path_style = true
EOF
FTPS_PASSWORD=bench-pw "$bin/ftps-server" --config "$work/server.toml" user add bench --home / > /dev/null
"$bin/ftps-server" --config "$work/server.toml" > "$work/server.out" 2> "$work/server.err" &
server=$!
pids+=($server)
for _ in $(seq 100); do grep -q "listening on" "$work/server.out" 2>/dev/null && break; sleep 0.1; done
export FTPS_PASSWORD=bench-pw
url="ftps://bench@127.0.0.1:$ftp_port"

head -c "$((size_mib << 20))" /dev/urandom > "$work/big.bin"
mkdir "$work/small"
for i in $(seq -w 1 "$files"); do head -c 4096 /dev/urandom > "$work/small/f$i.bin"; done

echo "S3 server: moto $(python3 -c 'import moto; print(moto.__version__)'); $(rclone version | head -1); ${size_mib} MiB and ${files} × 4 KiB"
t0=$(now); rc copy "$work/big.bin" s3:bench/direct/; t1=$(now); rclone_up=$(elapsed "$t0" "$t1")
t0=$(now); "$bin/ftps" --insecure -q put "$work/big.bin" "$url/"; t1=$(now); ftps_up=$(elapsed "$t0" "$t1")
peak=$(awk '/VmHWM/ {print $2}' "/proc/$server/status")
m0=$(cpu "$moto")
t0=$(now); /usr/bin/time -f "%U %S" -o "$work/rclone.cpu" rclone --config "$work/rclone.conf" cat s3:bench/direct/big.bin > /dev/null
t1=$(now); rclone_down=$(elapsed "$t0" "$t1")
m1=$(cpu "$moto"); s1=$(cpu "$server")
t0=$(now); /usr/bin/time -f "%U %S" -o "$work/ftps.cpu" "$bin/ftps" --insecure -q get "$url/big.bin" - > /dev/null
t1=$(now); ftps_down=$(elapsed "$t0" "$t1")
m2=$(cpu "$moto"); s2=$(cpu "$server")
sum_cpu() { awk '{ printf "%.2f", $1 + $2 }' "$1"; }
cpu_line="download CPU s: rclone-side moto $(elapsed "$m0" "$m1") + rclone $(sum_cpu "$work/rclone.cpu"); \
ftps-side moto $(elapsed "$m1" "$m2") + server $(elapsed "$s1" "$s2") + ftps $(sum_cpu "$work/ftps.cpu") ($(nproc) cores)"
t0=$(now); rc copy "$work/small" s3:bench/direct-small/; t1=$(now); rclone_small=$(elapsed "$t0" "$t1")
"$bin/ftps" --insecure -q mkdir "$url/small" || true
# Four at a time on both sides: rclone's default --transfers 4, ftps --parallel 4.
t0=$(now); "$bin/ftps" --insecure -q --parallel 4 put "$work"/small/*.bin "$url/small/"; t1=$(now); ftps_small=$(elapsed "$t0" "$t1")
ratio() { echo "scale=2; $1 / $2" | bc; }
printf '%-22s %10s %10s %8s\n' "" "rclone (s)" "ftps (s)" "ratio"
printf '%-22s %10.2f %10.2f %8s\n' "upload ${size_mib} MiB" "$rclone_up" "$ftps_up" "$(ratio "$rclone_up" "$ftps_up")"
printf '%-22s %10.2f %10.2f %8s\n' "download ${size_mib} MiB" "$rclone_down" "$ftps_down" "$(ratio "$rclone_down" "$ftps_down")"
printf '%-22s %10.2f %10.2f %8s\n' "upload ${files} files" "$rclone_small" "$ftps_small" "$(ratio "$rclone_small" "$ftps_small")"
echo "$cpu_line"
echo "ratio = rclone time / ftps time (1.0: the FTPS hop costs nothing); server peak RSS during the run: $((peak / 1024)) MiB"
