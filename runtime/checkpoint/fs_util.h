// Crash-safe file output shared by checkpoints and token shards.
//
// A reader (a resumed training run, a data loader) must never see a half
// written file under its final name. AtomicFileWriter streams into
// "<path>.tmp.<pid>" in the same directory (rename is only atomic within one
// file system), and commit() fsyncs the data, renames it over `path` and
// fsyncs the directory so that the rename itself survives a power loss. If
// the writer is destroyed without commit() the temporary file is removed.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace llamart::ckpt {

class AtomicFileWriter {
public:
  // Creates the temporary file; throws "<path>: <reason>" on failure.
  explicit AtomicFileWriter(const std::string &path);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter &) = delete;
  AtomicFileWriter &operator=(const AtomicFileWriter &) = delete;

  // Appends bytes (retrying short writes and EINTR).
  void write(const void *data, size_t bytes);
  // fsync, close, rename over the final path, fsync the directory.
  void commit();

  const std::string &path() const { return path_; }
  uint64_t bytes_written() const { return written_; }

private:
  void discard() noexcept;

  std::string path_;
  std::string temp_path_;
  int fd_ = -1;
  uint64_t written_ = 0;
  bool committed_ = false;
};

// The directory part of `path` ("." when it has none), for fsync_dir.
std::string parent_dir(const std::string &path);

} // namespace llamart::ckpt
