#include "runtime/train/run_lock.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/file.h>
#include <unistd.h>

namespace llamart::train {

RunDirLock::RunDirLock(const std::string &run_dir) {
  const std::string path = run_dir + "/.lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char buf[32] = {};
    const ssize_t n = ::pread(fd_, buf, sizeof buf - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK) {
      std::string holder = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
      holder.erase(holder.find_last_not_of(" \n") + 1);
      throw std::runtime_error("--run-dir: " + run_dir +
                               " is in use by another training process" +
                               (holder.empty() ? "" : " (pid " + holder + ")") +
                               "; wait for it or choose another --run-dir");
    }
    throw std::runtime_error(path + ": cannot lock: " + std::strerror(err));
  }
  // Best effort: the pid only makes a competing process's message clearer;
  // the lock itself is the flock.
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd_, 0) == 0)
    (void)!::pwrite(fd_, pid.data(), pid.size(), 0);
}

RunDirLock::~RunDirLock() {
  if (fd_ >= 0)
    ::close(fd_); // releases the flock
}

} // namespace llamart::train
