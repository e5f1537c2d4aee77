#!/bin/bash
# Issue 17's event-cost measurement, end to end with the release binaries (cargo build --release -p
# ftps-server-smol --bin ftps-server -p ftps-client-blocking --bin ftps): `ftps put` of 1000 x 4 KiB files
# (each an upload event, plus login/logout) with no sink vs one webhook sink whose receiver
# (testkit/clients/webhook_receiver.py, checking every signature) runs on the same machine, rounds interleaved.
# Prints each time and the ratio events-on / events-off of the medians.
set -e
R=${CARGO_TARGET_DIR:-target}/release
B=${BENCH_DIR:-/dev/shm/ftps-events-bench}
HERE=$(cd "$(dirname "$0")/.." && pwd)
export FTPS_PASSWORD=pw-bench
rm -rf $B; mkdir -p $B/files
for i in $(seq -w 1000); do head -c 4096 /dev/urandom > $B/files/f$i.bin; done
# RECEIVER_NICE=19 runs the receiver at the lowest priority, standing in for a receiver on another machine (it
# then takes only CPU time the server and client leave idle); RECEIVER=down stops it after start-up, so only
# the session-side cost remains (the queue grows; the delivery thread waits out its backoff).
# RECEIVER=rust uses benches/src/bin/webhook_sink.rs (cargo build --release -p ftps-benches --bin webhook-sink)
# instead of the tests' Python receiver: the per-event CPU of a production receiver rather than of http.server.
if [ "${RECEIVER:-up}" = rust ]; then
  nice -n ${RECEIVER_NICE:-0} $R/webhook-sink secret $B/received > $B/receiver.out &
else
  nice -n ${RECEIVER_NICE:-0} python3 $HERE/testkit/clients/webhook_receiver.py secret 0 $B/received > $B/receiver.out &
fi
receiver=$!
trap 'kill $receiver 2>/dev/null' EXIT
for i in $(seq 100); do grep -q "listening on" $B/receiver.out 2>/dev/null && break; sleep 0.05; done
hook_port=$(awk '{print $3}' $B/receiver.out)
[ "${RECEIVER:-up}" = down ] && kill $receiver
declare -A times cpus
for round in ${ROUNDS:-1 2 3 4 5}; do
for mode in off on; do
  d=$B/$mode; rm -rf $d; mkdir -p $d/root $d/state
  $R/ftps-server --state-dir $d/state user add bench --home / >/dev/null
  if [ $mode = on ]; then
    printf '[[webhooks]]\nurl = "http://127.0.0.1:%s/events"\nsecret = "secret"\n' $hook_port > $d/config.toml
  else
    : > $d/config.toml
  fi
  $R/ftps-server -c $d/config.toml --root $d/root --state-dir $d/state --listen 127.0.0.1:0 > $d/out 2>$d/err &
  pid=$!
  for i in $(seq 100); do grep -q "listening on" $d/out 2>/dev/null && break; sleep 0.05; done
  port=$(grep -o "listening on [0-9.]*:[0-9]*" $d/out | head -1 | sed 's/.*://')
  url=ftps://bench@127.0.0.1:$port/
  s=$(date +%s.%N); $R/ftps --insecure -q put $B/files/* $url; e=$(date +%s.%N)
  t=$(echo "$e - $s" | bc)
  times[$mode]="${times[$mode]} $t"
  # The server's own CPU time (user + system, in clock ticks): what delivery costs us, whoever the receiver is.
  sleep 0.5
  cpu=$(awk -v hz=$(getconf CLK_TCK) '{printf "%.2f", ($14 + $15) / hz}' /proc/$pid/stat)
  cpus[$mode]="${cpus[$mode]} $cpu"
  echo "round $round events $mode: 1000 x 4 KiB uploads ${t}s, server CPU ${cpu}s"
  kill $pid; wait $pid 2>/dev/null || true
done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
off=$(echo ${times[off]} | median); on=$(echo ${times[on]} | median)
echo "medians: off ${off}s, on ${on}s; throughput ratio on/off $(echo "scale=3; $off / $on" | bc)"
echo "server CPU medians: off $(echo ${cpus[off]} | median)s, on $(echo ${cpus[on]} | median)s"
[ "${RECEIVER:-up}" != down ] && echo "receiver CPU: $(awk -v hz=$(getconf CLK_TCK) '{printf "%.2f", ($14 + $15) / hz}' /proc/$receiver/stat)s"
[ -e $B/received ] && echo "events received: $(wc -l < $B/received)"
