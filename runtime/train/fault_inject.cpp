#include "runtime/train/fault_inject.h"

#include "runtime/comm/comm.h"

#include <csignal>
#include <cstdio>

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <stdexcept>
#include <string>

namespace llamart::train {

std::vector<Fault> parse_faults(const std::string &spec) {
  std::vector<Fault> out;
  size_t begin = 0;
  while (begin <= spec.size()) {
    size_t end = spec.find(',', begin);
    if (end == std::string::npos)
      end = spec.size();
    const std::string item = spec.substr(begin, end - begin);
    auto bad = [&](const std::string &why) {
      throw std::runtime_error("--inject: '" + item + "': " + why +
                               " (expected nan@N, spike@N, bitflip@N or kill@N, N >= 1, comma-separated)");
    };
    const size_t at = item.find('@');
    if (at == std::string::npos)
      bad("no '@'");
    const std::string kind = item.substr(0, at), number = item.substr(at + 1);
    Fault f{};
    if (kind == "nan")
      f.kind = FaultKind::NaN;
    else if (kind == "spike")
      f.kind = FaultKind::Spike;
    else if (kind == "bitflip")
      f.kind = FaultKind::BitFlip;
    else if (kind == "kill")
      f.kind = FaultKind::Kill;
    else
      bad("unknown fault '" + kind + "'");
    char *stop = nullptr;
    errno = 0;
    const long long n = std::strtoll(number.c_str(), &stop, 10);
    if (number.empty() || *stop != '\0' || errno == ERANGE || n < 1)
      bad("the update number must be an integer >= 1");
    f.attempt = n;
    out.push_back(f);
    begin = end + 1;
  }
  return out;
}

std::vector<FaultKind> faults_at(const std::vector<Fault> &faults, int64_t attempt) {
  std::vector<FaultKind> out;
  for (const Fault &f : faults)
    if (f.attempt == attempt)
      out.push_back(f.kind);
  return out;
}

template <typename T> void apply_fault(FaultKind kind, T *grads, int64_t n, double &loss) {
  if (kind == FaultKind::Kill) {
    const char *restart = std::getenv("LLAMA_RUN_RESTART");
    if (restart && std::string(restart) != "0")
      return;
    if (comm::rank(comm::Axis::World) == comm::size(comm::Axis::World) - 1) {
      std::fprintf(stderr, "--inject kill: rank %d dies now (SIGKILL)\n",
                   comm::rank(comm::Axis::World));
      std::fflush(stderr);
      std::raise(SIGKILL);
    }
    return;
  }
  if (n <= 0 || kind == FaultKind::BitFlip)
    return;
  if (kind == FaultKind::NaN) {
    grads[n / 2] = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  loss *= kSpikeFactor;
  const T factor = static_cast<T>(kSpikeFactor);
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i)
    grads[i] *= factor;
}

template void apply_fault<float>(FaultKind, float *, int64_t, double &);
template void apply_fault<double>(FaultKind, double *, int64_t, double &);

} // namespace llamart::train
