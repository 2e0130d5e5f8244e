// One training process per run directory. Two processes resuming the same run
// would interleave checkpoint writes and rotations, and each one's cleanup of
// interrupted writes (checkpoint_dir.h) would delete the other's checkpoint
// in progress. The lock is flock() on <run-dir>/.lock: the kernel releases it
// when the holder exits, however it exits (kill -9 included), so a crashed
// run never leaves a stale lock behind.
#pragma once
#include <string>

namespace llamart::train {

class RunDirLock {
public:
  // Takes the lock without waiting; throws std::runtime_error naming the
  // directory (and the holder's pid when it can be read) if it is held.
  explicit RunDirLock(const std::string &run_dir);
  ~RunDirLock();
  RunDirLock(const RunDirLock &) = delete;
  RunDirLock &operator=(const RunDirLock &) = delete;

private:
  int fd_ = -1;
};

} // namespace llamart::train
