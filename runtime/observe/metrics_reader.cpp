// read_metrics (plot.h): metrics.jsonl back into series.
#include "runtime/observe/plot.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <stdexcept>

namespace llamart::observe {

namespace {

using json = nlohmann::json;

struct LineError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A number, or NaN for null (how MetricsLog writes non-finite values).
double number_field(const json &j, const char *key) {
  const auto it = j.find(key);
  if (it == j.end())
    throw LineError(std::string("record has no \"") + key + "\"");
  if (it->is_null())
    return std::numeric_limits<double>::quiet_NaN();
  if (!it->is_number())
    throw LineError(std::string("\"") + key + "\" is not a number");
  return it->get<double>();
}

int64_t step_field(const json &j) {
  const auto it = j.find("step");
  if (it == j.end() || !it->is_number_integer())
    throw LineError("record has no integer \"step\"");
  return it->get<int64_t>();
}

// Sorts by step keeping, among records of one step, the last one read: a
// rollback or a resume after a crash redoes steps, and the redone values are
// the ones the run kept.
template <typename T, typename StepOf>
void keep_last_per_step(std::vector<T> &v, StepOf step_of) {
  std::stable_sort(v.begin(), v.end(),
                   [&](const T &a, const T &b) { return step_of(a) < step_of(b); });
  std::vector<T> out;
  out.reserve(v.size());
  for (size_t i = 0; i < v.size(); ++i)
    if (i + 1 == v.size() || step_of(v[i + 1]) != step_of(v[i]))
      out.push_back(v[i]);
  v.swap(out);
}

} // namespace

MetricsHistory read_metrics(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  MetricsHistory h;
  std::string line;
  int64_t line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const bool complete = !in.eof(); // getline stopped at a newline
    if (line.find_first_not_of(" \t\r") == std::string::npos)
      continue;
    try {
      json j;
      try {
        j = json::parse(line);
      } catch (const json::parse_error &) {
        if (!complete)
          break; // the writer is in the middle of this line
        throw LineError("not a JSON record");
      }
      if (!j.is_object())
        throw LineError("not a JSON object");
      if (j.contains("skipped")) {
        h.skipped.push_back(step_field(j));
      } else if (j.contains("rollback_to")) {
        h.rollbacks.push_back(step_field(j));
      } else if (j.contains("val_loss")) {
        const int64_t step = step_field(j);
        h.evals.emplace_back(step, number_field(j, "val_loss"));
      } else if (j.contains("loss")) {
        MetricsHistory::Update u;
        u.step = step_field(j);
        u.loss = number_field(j, "loss");
        u.lr = number_field(j, "lr");
        u.grad_norm = number_field(j, "grad_norm");
        h.updates.push_back(u);
      }
    } catch (const LineError &e) {
      throw std::runtime_error(path + ":" + std::to_string(line_no) + ": " + e.what());
    }
  }
  if (in.bad())
    throw std::runtime_error(path + ": read failed: " + std::strerror(errno));
  keep_last_per_step(h.updates, [](const MetricsHistory::Update &u) { return u.step; });
  keep_last_per_step(h.evals, [](const std::pair<int64_t, double> &e) { return e.first; });
  // Counted after deduplication: a value superseded by a redone step was not
  // going to be drawn anyway.
  for (const MetricsHistory::Update &u : h.updates)
    h.nonfinite += !std::isfinite(u.loss) + !std::isfinite(u.lr) + !std::isfinite(u.grad_norm);
  for (const auto &e : h.evals)
    h.nonfinite += !std::isfinite(e.second);
  std::sort(h.skipped.begin(), h.skipped.end());
  h.skipped.erase(std::unique(h.skipped.begin(), h.skipped.end()), h.skipped.end());
  std::sort(h.rollbacks.begin(), h.rollbacks.end());
  if (h.updates.empty() && h.evals.empty() && h.skipped.empty())
    throw std::runtime_error(path + ": no update, eval or skip record to plot yet");
  return h;
}

} // namespace llamart::observe
