#!/bin/bash
# Issue 16's measurements, end to end with the release binaries (cargo build --release -p ftps-server-smol
# --bin ftps-server -p ftps-client-blocking --bin ftps): `ftps put` of 1000 x 4 KiB files and of 1 GiB over
# existing files, versions off vs on; then, with versions on, restoring the 1000 files from the live tree and
# from /@at/<tomorrow>/ with `ftps mirror` (also --parallel 4) and lftp `mirror`, checked with diff.
# BENCH_DIR must hold $BENCH_DIR/files/*.bin (1000 x 4 KiB) and $BENCH_DIR/big.bin (1 GiB); a tmpfs by default
# (like `cargo xtask bench`), so the disk's other users do not decide the result.
set -e
R=${CARGO_TARGET_DIR:-target}/release
B=${BENCH_DIR:-/dev/shm/ftps-versions-bench}
export FTPS_PASSWORD=pw-bench
for round in ${ROUNDS:-1 2 3}; do
for mode in off on; do
  d=$B/$mode; rm -rf $d; mkdir -p $d/root
  $R/ftps-server --state-dir $d/state user add bench --home / >/dev/null
  port=$((21000 + RANDOM % 1000))
  flag=""; [ $mode = on ] && flag="--versions"
  $R/ftps-server --root $d/root --state-dir $d/state --listen 127.0.0.1:$port --passive-ports $((port+1000))-$((port+1050)) $flag > $d/out 2>$d/err &
  pid=$!
  for i in $(seq 100); do grep -q "listening on" $d/out 2>/dev/null && break; sleep 0.05; done
  url=ftps://bench@127.0.0.1:$port/
  $R/ftps --insecure -q put $B/files/* $url
  s=$(date +%s.%N); $R/ftps --insecure -q put $B/files/* $url; e=$(date +%s.%N)
  small=$(echo "$e - $s" | bc)
  $R/ftps --insecure -q put $B/big.bin $url
  s=$(date +%s.%N); $R/ftps --insecure -q put $B/big.bin $url; e=$(date +%s.%N)
  big=$(echo "$e - $s" | bc)
  versions=$(ls $d/root/.ftps-tmp/versions 2>/dev/null | wc -l)
  if [ $mode = on ]; then
    # Restore rate: the live tree vs the view of now (tomorrow), our mirror and lftp's.
    rm $d/root/big.bin
    t() { local s=$(date +%s.%N); "$@" >/dev/null 2>&1 || echo "FAILED: $*"; local e=$(date +%s.%N); echo "$e - $s" | bc; }
    at=$(date -u -d tomorrow +%F)
    live=$(t $R/ftps --insecure -q mirror --download $url $d/r-live)
    view=$(t $R/ftps --insecure -q mirror --download --at $at $url $d/r-view)
    par=$(t $R/ftps --insecure -q --parallel 4 mirror --download --at $at $url $d/r-par)
    diff -r $d/r-live $d/r-view >/dev/null && diff -r $B/files $d/r-par > /dev/null && echo "restored trees identical" || echo "RESTORE DIFFERS"
    lscript="set ssl:verify-certificate no; set ftp:ssl-force yes; set ftp:ssl-protect-data yes; open -u bench,$FTPS_PASSWORD ftp://127.0.0.1:$port"
    llive=$(t lftp -c "$lscript; mirror / $d/l-live")
    lview=$(t lftp -c "$lscript; mirror /@at/$at/ $d/l-view")
    diff -r $d/l-live $d/l-view >/dev/null && echo "lftp trees identical" || echo "LFTP DIFFERS"
    echo "round $round restore 1000 files: ftps mirror live ${live}s view ${view}s (--parallel 4 view ${par}s); lftp mirror live ${llive}s view ${lview}s"
  fi
  echo "round $round versions $mode: 1000 x 4 KiB overwrite ${small}s, 1 GiB overwrite ${big}s (kept objects: $versions)"
  kill $pid; wait $pid 2>/dev/null || true
done
done
