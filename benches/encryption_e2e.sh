#!/bin/bash
# Issue 17's encryption measurement, end to end with the release binaries (cargo build --release -p
# ftps-server-smol --bin ftps-server -p ftps-client-blocking --bin ftps): `ftps` uploads and downloads 1 GiB and
# 1000 x 4 KiB through the server with plain storage vs `--encrypt`, rounds interleaved; each download is
# checked with cmp / diff (the small files go up and down with `ftps mirror`). Prints every time and the
# throughput ratios encrypted / plain of the medians.
# BENCH_DIR is a tmpfs by default (like `cargo xtask bench`), so the disk's other users do not decide the result.
set -e
R=${CARGO_TARGET_DIR:-target}/release
B=${BENCH_DIR:-/dev/shm/ftps-encryption-bench}
export FTPS_PASSWORD=pw-bench
rm -rf $B; mkdir -p $B/files
for i in $(seq -w 1000); do head -c 4096 /dev/urandom > $B/files/f$i.bin; done
head -c $((1024 * 1024 * 1024)) /dev/urandom > $B/big.bin
t() { local s=$(date +%s.%N); "$@" > /dev/null; local e=$(date +%s.%N); echo "$e - $s" | bc; }
declare -A times
for round in ${ROUNDS:-1 2 3}; do
for mode in plain encrypted; do
  d=$B/$mode; rm -rf $d; mkdir -p $d/root $d/state
  $R/ftps-server --state-dir $d/state user add bench --home / >/dev/null
  flag=""; [ $mode = encrypted ] && flag="--encrypt"
  $R/ftps-server --root $d/root --state-dir $d/state --listen 127.0.0.1:0 $flag > $d/out 2>$d/err &
  pid=$!
  for i in $(seq 100); do grep -q "listening on" $d/out 2>/dev/null && break; sleep 0.05; done
  port=$(grep -o "listening on [0-9.]*:[0-9]*" $d/out | head -1 | sed 's/.*://')
  url=ftps://bench@127.0.0.1:$port/
  big_up=$(t $R/ftps --insecure -q put $B/big.bin $url)
  big_down=$(t $R/ftps --insecure -q get ${url}big.bin $d/big.back)
  cmp -s $B/big.bin $d/big.back || echo "BIG FILE DIFFERS ($mode)"
  rm -f $d/big.back
  small_up=$(t $R/ftps --insecure -q mirror --upload $B/files ${url}small)
  small_down=$(t $R/ftps --insecure -q mirror --download ${url}small $d/small)
  diff -r $B/files $d/small > /dev/null || echo "SMALL FILES DIFFER ($mode)"
  echo "round $round $mode: 1 GiB up ${big_up}s down ${big_down}s; 1000 x 4 KiB up ${small_up}s down ${small_down}s"
  for k in big_up big_down small_up small_down; do times[$mode,$k]="${times[$mode,$k]} ${!k}"; done
  kill $pid; wait $pid 2>/dev/null || true
  rm -rf $d/root
done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for k in big_up big_down small_up small_down; do
  p=$(echo ${times[plain,$k]} | median); e=$(echo ${times[encrypted,$k]} | median)
  echo "$k: plain ${p}s, encrypted ${e}s, throughput ratio encrypted/plain $(echo "scale=3; $p / $e" | bc)"
done
