# Crash-safe checkpoints: a training run checkpointing after every update is
# killed with SIGKILL at random moments (most of them land inside a checkpoint
# write: the model big enough that a write takes tens of ms, the steps short)
# and resumed, over and over. After every kill:
#  - every step_N directory is complete and bit-identical to the clean run's
#    checkpoint of step N (MD5 of both safetensors files, state.json's
#    self-checksum), so no kill ever left a half checkpoint under a real name;
#  - no checkpoint the killed process had reported as written is gone;
#  - the next process resumes from the newest complete checkpoint, after
#    deleting what the kill left (.tmp-*, .old-*, LATEST.tmp.*);
#  - at most K + 1 checkpoints exist (K + 1 only when the kill hit rotation).
# At the end the run completes and its final model and optimizer state equal
# a clean uninterrupted run's, bit for bit; exactly K checkpoints remain.
# Then a byte of the newest checkpoint is flipped (model, optimizer, then
# state.json): resume must name the damaged file, fall back to the previous
# checkpoint, move the damaged one aside and again end bit-identical.
source "$(dirname "$0")/common.sh" "$@"

# 1.7M parameters: ~21 MB per checkpoint (model + AdamW moments), written in
# tens of ms, while an update of batch 2 x 16 tokens takes a few ms.
"$BIN/llama-compile" --preset micro --emit hf-config -o micro.json
"$PY" - <<'PYEOF'
import json
c = json.load(open("micro.json"))
c.update(_name_or_path="crash", hidden_size=256, intermediate_size=768, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=4, head_dim=64)
json.dump(c, open("crash.json", "w"))
PYEOF
compile --config crash.json --batch 2 --seq-len 16 -o crashm
write_shards data 64 20000 2000 7
# One thread: on a shared 2-core machine an OpenMP team waiting for a busy
# core stretches the update between writes; the numbers do not change.
export OMP_NUM_THREADS=1

"$PY" - <<'PYEOF' || die "checkpoint_crash: see above"
import hashlib, json, os, random, re, shutil, signal, subprocess, sys, time

STEPS, KEEP, KILLS = 60, 3, 30
TRAIN = ["./crashm", "train", "--data", "data", "--steps", str(STEPS), "--checkpoint-every", "1",
         "--lr", "3e-3", "--warmup", "4"]
# Kill delays are random but reproducible; the moments they hit are not (the
# machine's speed decides), which is the point.
rng = random.Random(7)

def fail(msg):
    print("FAIL: checkpoint_crash: " + msg)
    sys.exit(1)

def md5(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

def fingerprint(d):
    return (md5(d + "/model.safetensors"), md5(d + "/optimizer.safetensors"),
            json.load(open(d + "/state.json"))["state_checksum"])

def name(step):
    return "step_%06d" % step

def complete_steps(root):
    if not os.path.isdir(root):
        return []
    return sorted(int(m.group(1)) for m in (re.fullmatch(r"step_(\d+)", n) for n in os.listdir(root)) if m)

def leftovers(root):
    if not os.path.isdir(root):
        return []
    return sorted(n for n in os.listdir(root)
                  if n.startswith(".tmp-") or n.startswith(".old-") or n.startswith("LATEST.tmp."))

def writing(root, pid):
    # This process's temporary directory (.tmp-step_N-PID), not one that an
    # earlier kill left behind.
    return os.path.isdir(root) and any(n.startswith(".tmp-") and n.endswith("-%d" % pid)
                                       for n in os.listdir(root))

# --- the clean run: every checkpoint fingerprinted, then deleted (1.3 GB otherwise).
# A step_N directory is complete the moment it appears (it is renamed into
# place), which this harvesting relies on too.
ref, root = {}, "ref/checkpoints"
p = subprocess.Popen(TRAIN + ["--run-dir", "ref", "--keep-last", "0", "--quiet"],
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
def harvest():
    for step in complete_steps(root):
        if step not in ref:
            ref[step] = fingerprint(root + "/" + name(step))
            shutil.rmtree(root + "/" + name(step))
while p.poll() is None:
    harvest()
    time.sleep(0.01)
harvest()
if p.returncode != 0:
    fail("clean run failed: " + p.stderr.read().decode(errors="replace"))
if sorted(ref) != list(range(1, STEPS + 1)):
    fail("the clean run did not leave one checkpoint per update")

# --- kill, inspect, resume -------------------------------------------------
run, root = "run", "run/checkpoints"
resume = TRAIN + ["--run-dir", run, "--keep-last", str(KEEP), "--resume"]
phases = {}
mid_write = 0
expect_from = None          # newest complete checkpoint when the process started
previous_leftovers = []
for trial in range(1, KILLS + 1):
    err_path = "trial%02d.err" % trial
    with open(err_path, "w") as err:
        p = subprocess.Popen(resume, stdout=subprocess.DEVNULL, stderr=err)
        if trial % 4 == 0:
            # Anywhere from the start: startup, resume, cleanup, the first update.
            time.sleep(rng.uniform(0.0, 0.3))
        else:
            # Once the process writes checkpoints, somewhere in the next one to
            # three update + checkpoint cycles (~100 ms each, ~70% writing).
            t0 = time.time()
            while time.time() - t0 < 10 and p.poll() is None and not writing(root, p.pid):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.3))
        if p.poll() is not None:
            fail("trial %d: the run ended (exit %d) before the kill; raise STEPS" % (trial, p.returncode))
        p.send_signal(signal.SIGKILL)
        p.wait()
    log = open(err_path, errors="replace").read()

    # Where the process resumed from (if it got that far before the kill).
    m = re.search(r"resumed from (\S+) at step (\d+)", log)
    if m:
        if expect_from is None or m.group(1) != root + "/" + name(expect_from):
            fail("trial %d resumed from %s, but the newest complete checkpoint was %s"
                 % (trial, m.group(1), expect_from and name(expect_from)))
    elif "starting from scratch" in log:
        if expect_from is not None:
            fail("trial %d started from scratch next to %s" % (trial, name(expect_from)))
    if (m or "starting from scratch" in log) and previous_leftovers:
        # Cleanup happens before the checkpoint is chosen.
        if "leftover" not in log:
            fail("trial %d: no note about removing %s" % (trial, previous_leftovers))
        still = [n for n in previous_leftovers if os.path.exists(root + "/" + n)]
        if still:
            fail("trial %d: leftovers of the previous kill survived: %s" % (trial, still))

    # What the kill interrupted.
    left = leftovers(root)
    steps = complete_steps(root)
    latest = open(root + "/LATEST").read().strip() if os.path.exists(root + "/LATEST") else None
    lagging = bool(steps) and latest != name(steps[-1])
    phase = "between writes"
    tmp = [n for n in left if n.startswith(".tmp-")]
    if tmp:
        files = os.listdir(root + "/" + tmp[0])
        if any(f.startswith("model.safetensors.tmp") for f in files) or not files:
            phase = "writing model.safetensors"
        elif any(f.startswith("optimizer.safetensors.tmp") for f in files) or "optimizer.safetensors" not in files:
            phase = "writing optimizer.safetensors"
        elif "state.json" not in files:
            phase = "checksumming, state.json"
        else:
            phase = "renaming into place"
    elif lagging or any(n.startswith("LATEST.tmp.") for n in left):
        phase = "updating LATEST"
    elif any(n.startswith(".old-") for n in left):
        phase = "rotating (deleting the oldest)"
    if phase != "between writes":
        mid_write += 1
    phases[phase] = phases.get(phase, 0) + 1

    # Every complete checkpoint is the clean run's, byte for byte.
    for step in steps:
        if fingerprint(root + "/" + name(step)) != ref[step]:
            fail("trial %d: %s differs from the clean run's checkpoint of that step" % (trial, name(step)))
    if len(steps) > KEEP + 1:
        fail("trial %d: %d checkpoints with --keep-last %d" % (trial, len(steps), KEEP))
    reported = [int(s) for s in re.findall(r"checkpoint \S+/step_(\d+)\n", log)]
    if reported and (not steps or steps[-1] < max(reported)):
        fail("trial %d: step_%06d was reported written but is gone" % (trial, max(reported)))
    print("kill %2d: %-30s newest complete %s%s" % (trial, phase, steps and name(steps[-1]),
          ", left " + " ".join(left) if left else ""))
    expect_from = steps[-1] if steps else None
    previous_leftovers = left

# --- finish and compare ------------------------------------------------------
r = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
if r.returncode != 0:
    fail("final resume failed: " + r.stderr.decode(errors="replace"))
if "resumed from %s/%s" % (root, name(expect_from)) not in r.stderr.decode(errors="replace"):
    fail("final resume did not start from %s" % name(expect_from))
if fingerprint(root + "/" + name(STEPS)) != ref[STEPS]:
    fail("after %d kills the final checkpoint differs from the clean run's" % KILLS)
if complete_steps(root) != list(range(STEPS - KEEP + 1, STEPS + 1)):
    fail("--keep-last %d left %s" % (KEEP, complete_steps(root)))
if leftovers(root):
    fail("leftovers after a completed run: %s" % leftovers(root))
if open(root + "/LATEST").read() != name(STEPS) + "\n":
    fail("LATEST does not name %s" % name(STEPS))

# --- a flipped byte in the newest checkpoint -----------------------------------
for victim in ("model.safetensors", "optimizer.safetensors", "state.json"):
    path = "%s/%s/%s" % (root, name(STEPS), victim)
    data = bytearray(open(path, "rb").read())
    if victim == "state.json":
        # A digit changed to another digit: still valid JSON, still a plausible
        # state (a step, a data position, a checksum), only state.json's own
        # checksum can tell.
        # elapsed_s (wall-clock time, for reports) is deliberately outside the
        # checksum so that equal training states have equal checksums.
        clock = re.search(rb'"elapsed_s": [^,]*,', data).span()
        at = rng.choice([i for i, c in enumerate(data)
                         if chr(c).isdigit() and not clock[0] <= i < clock[1]])
        data[at] = ord("0") + (data[at] - ord("0") + 1 + rng.randrange(9)) % 10
    else:
        at = rng.randrange(len(data))
        data[at] ^= 1 << rng.randrange(8)
    open(path, "wb").write(bytes(data))
    r = subprocess.run(resume, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = r.stderr.decode(errors="replace")  # the message quotes the damaged bytes
    if r.returncode != 0:
        fail("resume after flipping byte %d of %s failed: %s" % (at, victim, err))
    if "warning: " + path + ": " not in err or "falling back to " + name(STEPS - 1) not in err:
        fail("flipping byte %d of %s: no warning naming it and the fallback:\n%s" % (at, victim, err))
    if not os.path.isdir("%s/%s.corrupt" % (root, name(STEPS))):
        fail("the damaged %s was not moved aside" % name(STEPS))
    if fingerprint(root + "/" + name(STEPS)) != ref[STEPS]:
        fail("redone from %s after the flip in %s, the run ends differently" % (name(STEPS - 1), victim))
    if complete_steps(root) != list(range(STEPS - KEEP + 1, STEPS + 1)):
        fail("after the fallback --keep-last %d left %s" % (KEEP, complete_steps(root)))
    print("flipped byte %d of %s: %s" % (at, victim, next(l for l in err.splitlines() if path in l)))
    shutil.rmtree("%s/%s.corrupt" % (root, name(STEPS)))

print("checkpoint_crash: %d kills, %d inside a checkpoint write (%s); every complete checkpoint "
      "bit-identical to the clean run's, 0 reported checkpoints lost, every resume from the newest "
      "complete one; final model and optimizer bit-identical after all kills; 3/3 flipped bytes detected"
      % (KILLS, mid_write, ", ".join("%s %d" % kv for kv in sorted(phases.items()))))
if mid_write * 3 < KILLS:
    fail("only %d of %d kills landed inside a write: the test no longer tests writes" % (mid_write, KILLS))
PYEOF
