# llama-run: the command lines it builds (--dry-run, local and Slurm), a real
# 4-rank run of the comm tests through it, what the ranks receive in their
# environment, and the failure paths: a rank that never joins a collective
# (--timeout), a rank killed with kill -9, SIGTERM to the launcher, and
# --max-restarts with a program that fails once.
source "$(dirname "$0")/common.sh" "$@"

RUN=$BIN/llama-run
COMM_TEST=$BIN/comm_test
[ -x "$RUN" ] || die "$RUN not built"
[ -x "$COMM_TEST" ] || die "$COMM_TEST not built"
ROOT_FLAG=""; [ "$(id -u)" = 0 ] && ROOT_FLAG="--allow-run-as-root "
now_ms() { date +%s%3N; }
# Running, as opposed to gone or a zombie (dead, waiting for a reaper that
# may be slow in a container).
alive() { ps -o stat= -p "$1" 2> /dev/null | grep -qv '^Z'; }
# Ranks the launcher's exit left behind after 5 s (mpirun may return while
# the kernel is still tearing its killed children down).
survivors() {
  local r left
  for _ in $(seq 50); do
    left=""
    for r in "$@"; do alive "$(cat pids/rank-$r.pid)" && left="$left $r"; done
    [ -z "$left" ] && return 0
    sleep 0.1
  done
  echo "$left"
}

# ---- dry runs: exact lines. Pinned to one CPU so the core count (and with
# it --oversubscribe and OMP_NUM_THREADS) does not depend on the machine.
MPIRUN=$(taskset -c 0 "$RUN" --dry-run -n 1 ./p | cut -d' ' -f1)
[[ "$MPIRUN" == /* ]] || die "dry run does not start with an absolute mpirun path: $MPIRUN"
line=$(env -u OMP_NUM_THREADS taskset -c 0 "$RUN" --dry-run -n 4 --timeout 7 ./prog train --data 'my dir')
want="$MPIRUN ${ROOT_FLAG}--oversubscribe --bind-to none --mca orte_base_help_aggregate 0 -n 4 -x OMP_NUM_THREADS=1 -x LLAMA_COMM_TIMEOUT_S=7 ./prog train --data 'my dir'"
[ "$line" = "$want" ] || die "local dry run:
  got  $line
  want $want"
# One rank fits one core: no --oversubscribe; a user's OMP_NUM_THREADS is
# left alone (the ranks inherit it).
line=$(OMP_NUM_THREADS=3 taskset -c 0 "$RUN" --dry-run -n 1 -- ./prog --flag)
want="$MPIRUN ${ROOT_FLAG}--bind-to none --mca orte_base_help_aggregate 0 -n 1 ./prog --flag"
[ "$line" = "$want" ] || die "local dry run with OMP_NUM_THREADS set:
  got  $line
  want $want"
line=$(env -u OMP_NUM_THREADS -u SLURM_CPUS_PER_TASK -u SLURM_NTASKS_PER_NODE taskset -c 0 \
  "$RUN" --slurm --dry-run -n 8 --timeout 30 ./prog train --data d)
want="srun --ntasks=8 --kill-on-bad-exit=1 --mpi=pmix --export=ALL,OMP_NUM_THREADS=1,LLAMA_COMM_TIMEOUT_S=30 ./prog train --data d"
[ "$line" = "$want" ] || die "slurm dry run:
  got  $line
  want $want"
line=$(env -u OMP_NUM_THREADS SLURM_CPUS_PER_TASK=6 "$RUN" --slurm --dry-run -n 8 ./prog)
want="srun --ntasks=8 --kill-on-bad-exit=1 --mpi=pmix --export=ALL,OMP_NUM_THREADS=6 ./prog"
[ "$line" = "$want" ] || die "slurm dry run with SLURM_CPUS_PER_TASK=6:
  got  $line
  want $want"

# ---- usage errors: exit 2, one line naming the flag.
expect_usage_error() { # PATTERN ARGS...
  local pattern=$1; shift
  set +e; "$RUN" "$@" > usage.out 2> usage.err; local rc=$?; set -e
  [ $rc = 2 ] || die "llama-run $* exited $rc, want 2"
  [ "$(wc -l < usage.err)" = 1 ] || die "llama-run $*: want one line, got: $(cat usage.err)"
  grep -q -- "$pattern" usage.err || die "llama-run $*: '$pattern' not in: $(cat usage.err)"
}
expect_usage_error "unknown flag '--bogus'" -n 2 --bogus ./prog
expect_usage_error "\-n 'two' is not an integer" -n two ./prog
expect_usage_error "\-n N (the number of ranks) is required" ./prog
expect_usage_error "no program to run" -n 2
expect_usage_error "\-\-timeout '-1' is not a positive number" -n 2 --timeout -1 ./prog
expect_usage_error "\-\-max-restarts needs a value" -n 2 --max-restarts
"$RUN" --help > help.out || die "--help failed"
for word in --timeout --max-restarts --slurm --dry-run OMP_NUM_THREADS --resume; do
  grep -q -- "$word" help.out || die "--help does not explain $word"
done

# ---- a real 4-rank job: the comm grid tests through llama-run.
"$RUN" -n 4 "$COMM_TEST" --grid=2x2 > grid.out 2> grid.err || { cat grid.out grid.err; die "4-rank comm_test via llama-run failed"; }
grep -q "PASSED" grid.out || die "no PASSED in the 4-rank comm_test output"

# ---- what the ranks get: OMP_NUM_THREADS = max(1, cpus / N), the timeout.
cat > show_env.sh <<'EOF'
#!/bin/bash
echo "rank=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-?}} omp=${OMP_NUM_THREADS:-unset} timeout=${LLAMA_COMM_TIMEOUT_S:-unset}"
EOF
chmod +x show_env.sh
env -u OMP_NUM_THREADS "$RUN" -n 2 --timeout 9 ./show_env.sh > env.out || die "show_env via llama-run failed"
threads=$(( $(nproc) / 2 )); [ $threads -ge 1 ] || threads=1
for r in 0 1; do
  grep -qx "rank=$r omp=$threads timeout=9" env.out || die "rank $r environment: $(cat env.out)"
done

# ---- a rank that never joins a collective: its peers give up after 2 s.
t0=$(now_ms)
set +e; "$RUN" -n 4 --timeout 2 "$COMM_TEST" --grid=4x1 --mode=diverge > diverge.out 2> diverge.err; rc=$?; set -e
ms=$(( $(now_ms) - t0 ))
[ $rc != 0 ] || die "diverged job exited 0"
grep -Eq "^rank [0-9] \(dp [0-9], tp 0\): all_reduce over world \('diverged'\) timed out after 2 s: a peer died or diverged; ending the job$" diverge.err \
  || die "no timeout line naming the collective: $(cat diverge.err)"
[ $ms -lt 10000 ] || die "diverged job took ${ms} ms to end (timeout 2 s)"
echo "timeout case: exit $rc after $ms ms"

# ---- kill -9 one rank mid-run: mpirun must end the whole job.
mkdir pids
"$RUN" -n 4 "$COMM_TEST" --grid=2x2 --mode=loop --pid-dir=pids --seconds=120 > loop.out 2> loop.err &
job=$!
for _ in $(seq 200); do [ -f pids/rank-3.pid ] && [ -f pids/rank-2.pid ] && break; sleep 0.1; done
[ -f pids/rank-2.pid ] || die "the looping ranks did not start: $(cat loop.err)"
sleep 1 # well inside the loop of collectives
t0=$(now_ms)
kill -9 "$(cat pids/rank-2.pid)"
set +e; wait $job; rc=$?; set -e
ms=$(( $(now_ms) - t0 ))
[ $rc != 0 ] || die "job with a killed rank exited 0"
[ $ms -lt 30000 ] || die "job with a killed rank took ${ms} ms to end"
left=$(survivors 0 1 3); [ -z "$left" ] || die "ranks$left still alive 5 s after the job ended"
echo "kill -9 case: exit $rc after $ms ms"

# ---- SIGTERM to llama-run ends the job and is not taken as a failure to
# restart from.
rm -f pids/*
"$RUN" -n 2 --max-restarts 3 "$COMM_TEST" --grid=2x1 --mode=loop --pid-dir=pids --seconds=120 > term.out 2> term.err &
job=$!
for _ in $(seq 200); do [ -f pids/rank-1.pid ] && [ -f pids/rank-0.pid ] && break; sleep 0.1; done
[ -f pids/rank-1.pid ] || die "the looping ranks did not start: $(cat term.err)"
t0=$(now_ms)
kill -TERM $job
set +e; wait $job; rc=$?; set -e
ms=$(( $(now_ms) - t0 ))
[ $rc != 0 ] || die "terminated job exited 0"
[ $ms -lt 30000 ] || die "terminated job took ${ms} ms to end"
! grep -q "restart" term.err || die "llama-run restarted after SIGTERM: $(cat term.err)"
left=$(survivors 0 1); [ -z "$left" ] || die "ranks$left still alive 5 s after SIGTERM"
echo "SIGTERM case: exit $rc after $ms ms"

# ---- --max-restarts: a "training binary" that fails on its first start.
cat > flaky.sh <<'EOF'
#!/bin/bash
# Fails (exit 3) the first time each rank starts, succeeds the next; logs
# its arguments.
r=${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}
echo "$*" >> "args.$r"
[ -f "started.$r" ] || { touch "started.$r"; exit 3; }
EOF
chmod +x flaky.sh
"$RUN" -n 2 --max-restarts 2 ./flaky.sh train --data d > flaky.out 2> flaky.err \
  || { cat flaky.err; die "flaky job was not restarted to success"; }
[ "$(grep -c '^llama-run: ' flaky.err)" = 1 ] || die "want one restart line: $(cat flaky.err)"
grep -qx "llama-run: job failed (exit 3); restart 1 of 2 from the latest checkpoint" flaky.err \
  || die "restart line: $(cat flaky.err)"
for r in 0 1; do
  printf 'train --data d\ntrain --data d --resume\n' | cmp -s - "args.$r" \
    || die "rank $r arguments per start: $(cat args.$r)"
done
# Failing every time: R restarts, then the job's own exit status. Without
# `train` in the arguments nothing is added.
cat > always_fails.sh <<'EOF'
#!/bin/bash
echo "$*" >> "always.${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}"
exit 5
EOF
chmod +x always_fails.sh
set +e; "$RUN" -n 1 --max-restarts 2 ./always_fails.sh eval --x > always.out 2> always.err; rc=$?; set -e
[ $rc = 5 ] || die "always failing job: exit $rc, want 5"
printf 'llama-run: job failed (exit 5); restart 1 of 2\nllama-run: job failed (exit 5); restart 2 of 2\n' \
  | cmp -s - <(grep '^llama-run: ' always.err) || die "restart lines: $(cat always.err)"
printf 'eval --x\neval --x\neval --x\n' | cmp -s - always.0 || die "arguments per start: $(cat always.0)"

echo "llama_run: all checks passed"
