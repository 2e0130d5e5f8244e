// The loaders under fuzz take a path, as the tools do, so each input is
// written to one private temporary file that is reused for every run and
// removed at exit.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fcntl.h>
#include <sys/stat.h>
#include <string>
#include <unistd.h>

namespace llama_fuzz {

inline std::string &input_path() {
  static std::string path;
  return path;
}

// Rewrites the per-process temp file with `data` and returns its path.
// `name` is the file name the loader sees (config.json vs params.json etc.).
inline const std::string &write_input(const uint8_t *data, size_t size,
                                      const char *name) {
  std::string &path = input_path();
  if (path.empty()) {
    const char *dir = std::getenv("TMPDIR");
    std::string base = std::string(dir && *dir ? dir : "/tmp") + "/llama-fuzz-" +
                       std::to_string(getpid());
    if (mkdir(base.c_str(), 0700) != 0) {
      std::perror(base.c_str());
      std::abort(); // the harness is broken, not the code under test
    }
    path = base + "/" + name;
    std::atexit([] {
      std::remove(input_path().c_str());
      std::remove(input_path().substr(0, input_path().rfind('/')).c_str());
    });
  }
  const int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) {
    std::perror(path.c_str());
    std::abort();
  }
  size_t done = 0;
  while (done < size) {
    const ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) {
      std::perror(path.c_str());
      std::abort();
    }
    done += static_cast<size_t>(n);
  }
  close(fd);
  return path;
}

} // namespace llama_fuzz
