# quiet.sh — sourced by the CPU benchmarks (cpu_bench.sh, cpu_train_bench.sh):
# timings on a shared machine are only worth recording when it is quiet.
# wait_quiet: waits until the 1-minute load average is below QUIET_LOAD
# (at most QUIET_WAIT s); sets LOAD to the load average it goes on at.
wait_quiet() {
  local waited=0
  while awk -v l="$(cut -d ' ' -f 1 /proc/loadavg)" -v q="$QUIET_LOAD" 'BEGIN { exit !(l >= q) }' &&
    [ "$waited" -lt "$QUIET_WAIT" ]; do
    sleep 20
    waited=$((waited + 20))
  done
  LOAD=$(cut -d ' ' -f 1 /proc/loadavg)
}
