// AtomicFileWriter, atomic_write_file and fsync_dir: the temp + fsync +
// rename + fsync(dir) sequence that makes a write all-or-nothing on POSIX
// file systems (see fs_util.h for why each step is needed).
#include "runtime/checkpoint/fs_util.h"
#include "runtime/checkpoint/safetensors.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <stdexcept>
#include <sys/stat.h>
#include <unistd.h>

namespace llamart::ckpt {
namespace {

[[noreturn]] void fail(const std::string &path, const std::string &what) {
  throw std::runtime_error(path + ": " + what + ": " + std::strerror(errno));
}

} // namespace

std::string parent_dir(const std::string &path) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos)
    return ".";
  if (slash == 0)
    return "/";
  return path.substr(0, slash);
}

AtomicFileWriter::AtomicFileWriter(const std::string &path) : path_(path) {
  if (path.empty() || path.back() == '/')
    throw std::runtime_error(path + ": not a file path");
  temp_path_ = path + ".tmp." + std::to_string(::getpid());
  fd_ = ::open(temp_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
               0644);
  if (fd_ < 0)
    fail(path_, "cannot create temporary file " + temp_path_);
}

AtomicFileWriter::~AtomicFileWriter() {
  if (!committed_)
    discard();
}

void AtomicFileWriter::discard() noexcept {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  if (!temp_path_.empty())
    ::unlink(temp_path_.c_str());
}

void AtomicFileWriter::write(const void *data, size_t bytes) {
  if (fd_ < 0)
    throw std::runtime_error(path_ + ": write after commit");
  const auto *p = static_cast<const uint8_t *>(data);
  while (bytes > 0) {
    // Linux caps one write at ~2 GiB; chunking keeps each call well inside.
    const size_t chunk = bytes < (size_t(1) << 30) ? bytes : (size_t(1) << 30);
    const ssize_t n = ::write(fd_, p, chunk);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      fail(path_, "write failed");
    }
    p += n;
    bytes -= static_cast<size_t>(n);
    written_ += static_cast<uint64_t>(n);
  }
}

void AtomicFileWriter::commit() {
  if (fd_ < 0)
    throw std::runtime_error(path_ + ": commit called twice");
  if (::fsync(fd_) != 0)
    fail(path_, "fsync failed");
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0)
    fail(path_, "close failed");
  if (::rename(temp_path_.c_str(), path_.c_str()) != 0)
    fail(path_, "cannot rename " + temp_path_ + " over it");
  committed_ = true;
  fsync_dir(parent_dir(path_));
}

void atomic_write_file(const std::string &path, const std::string &bytes) {
  AtomicFileWriter out(path);
  out.write(bytes.data(), bytes.size());
  out.commit();
}

void fsync_dir(const std::string &dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    fail(dir, "cannot open directory to fsync it");
  // Some file systems (e.g. certain network mounts) reject fsync on a
  // directory with EINVAL; the rename is then as durable as they can make it.
  if (::fsync(fd) != 0 && errno != EINVAL) {
    const int saved = errno;
    ::close(fd);
    errno = saved;
    fail(dir, "fsync of directory failed");
  }
  ::close(fd);
}

} // namespace llamart::ckpt
