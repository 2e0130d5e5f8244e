#include "runtime/train/checkpoint_dir.h"

#include "runtime/checkpoint/fnv1a.h"

#include "runtime/checkpoint/meta_folder.h"
#include "runtime/checkpoint/safetensors.h"
#include "runtime/interop/hf_weights.h"
#include "runtime/program/param_store.h"
#include "runtime/program/program_check.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unistd.h>

namespace llamart::train {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char *kModelFile = "model.safetensors";
constexpr const char *kOptimizerFile = "optimizer.safetensors";
constexpr const char *kStateFile = "state.json";
constexpr const char *kLatestFile = "LATEST";
constexpr const char *kStateFormat = "llamart-train-state";
// Version 2 added the reliability state (optimizer_updates, attempts, skip
// and rollback counters, the spike detector); version 1 files still load.
constexpr int kStateVersion = 2;

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t parse_hex64(const std::string &s, const std::string &where) {
  if (s.empty() || s.size() > 16 ||
      s.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos)
    throw std::runtime_error(where + ": expected 16 hex digits, got '" + s + "'");
  return std::stoull(s, nullptr, 16);
}

uint64_t fnv1a64_bytes(const std::string &bytes) {
  return fnv1a64(bytes.data(), bytes.size());
}

// state.json protects itself too: "state_checksum" is the FNV-1a 64 of the
// compact dump of every other key but "elapsed_s". nlohmann dumps keys in
// sorted order and doubles in their shortest round-trip form, so parse + dump
// reproduces the bytes that were hashed, and a changed value (a step, a
// checksum, the data position) is caught even when the file still parses.
// Wall-clock time is left out so that equal training states have equal
// checksums (a run resumed halfway ends with the straight run's state.json,
// checksum included; train_resume.sh compares them).
constexpr const char *kStateChecksumKey = "state_checksum";

std::string state_checksum(json j) {
  j.erase(kStateChecksumKey);
  j.erase("elapsed_s");
  return "fnv1a64:" + hex64(fnv1a64_bytes(j.dump()));
}

// Parses "step_000123" into 123; -1 for anything else.
int64_t parse_checkpoint_name(const std::string &name) {
  static const std::string prefix = "step_";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0)
    return -1;
  const std::string digits = name.substr(prefix.size());
  if (digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    return -1;
  return std::stoll(digits);
}

std::string read_text_file(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string trim(std::string s) {
  const char *space = " \t\r\n";
  s.erase(0, s.find_first_not_of(space));
  s.erase(s.find_last_not_of(space) + 1);
  return s;
}

// Deletes a checkpoint directory so that no crash can leave a partial one
// under its step_N name: one atomic rename out of the step_N namespace, then
// the slow part. A leftover .old-* is removed by clean_interrupted_saves.
void remove_checkpoint_dir(const fs::path &dir) {
  std::error_code ec;
  const fs::path aside = dir.parent_path() / (".old-" + dir.filename().string() +
                                              "-" + std::to_string(getpid()));
  fs::rename(dir, aside, ec);
  if (ec)
    throw std::runtime_error(dir.string() + ": cannot move aside to delete it: " +
                             ec.message());
  fs::remove_all(aside, ec);
  if (ec)
    throw std::runtime_error(aside.string() + ": cannot delete: " + ec.message());
}

} // namespace

int clean_interrupted_saves(const std::string &root) {
  std::error_code ec;
  std::vector<fs::path> stale;
  for (const auto &entry : fs::directory_iterator(root, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(".tmp-", 0) == 0 || name.rfind(".old-", 0) == 0 ||
        name.rfind(std::string(kLatestFile) + ".tmp.", 0) == 0)
      stale.push_back(entry.path());
  }
  for (const fs::path &p : stale) {
    fs::remove_all(p, ec);
    if (ec)
      throw std::runtime_error(p.string() + ": cannot remove the leftover of an "
                                            "interrupted save: " + ec.message());
  }
  return static_cast<int>(stale.size());
}

std::vector<CheckpointRef> discard_checkpoints_after(const std::string &root,
                                                      int64_t step) {
  std::vector<CheckpointRef> removed;
  for (const CheckpointRef &c : list_checkpoints(root))
    if (c.step > step) {
      remove_checkpoint_dir(c.path);
      removed.push_back(c);
    }
  if (!removed.empty())
    ckpt::fsync_dir(root);
  return removed;
}

std::string quarantine_checkpoint(const CheckpointRef &checkpoint) {
  const fs::path dir(checkpoint.path);
  std::error_code ec;
  fs::path target = dir.string() + ".corrupt";
  for (int k = 1; fs::exists(target, ec); ++k)
    target = dir.string() + ".corrupt." + std::to_string(k);
  fs::rename(dir, target, ec);
  if (ec)
    throw std::runtime_error(dir.string() + ": cannot move aside to " +
                             target.string() + ": " + ec.message());
  ckpt::fsync_dir(dir.parent_path().string());
  return target.string();
}

std::string checkpoint_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%06lld", static_cast<long long>(step));
  return buf;
}

std::vector<CheckpointRef> list_checkpoints(const std::string &root) {
  std::vector<CheckpointRef> out;
  std::error_code ec;
  if (!fs::is_directory(root, ec))
    return out;
  for (const auto &entry : fs::directory_iterator(root, ec)) {
    const int64_t step = parse_checkpoint_name(entry.path().filename().string());
    if (step < 0 || !entry.is_directory(ec))
      continue;
    // state.json is written last inside the temporary directory, so a
    // directory with a step name but no state.json was not made by us.
    if (!fs::exists(entry.path() / kStateFile, ec))
      continue;
    out.push_back({step, entry.path().string()});
  }
  std::sort(out.begin(), out.end(),
            [](const CheckpointRef &a, const CheckpointRef &b) { return a.step < b.step; });
  return out;
}

uint64_t fnv1a64_file(const std::string &path) {
  std::FILE *f = std::fopen(path.c_str(), "rb");
  if (!f)
    throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  std::vector<unsigned char> buf(1 << 20);
  uint64_t h = kFnv1aOffset;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0)
    h = fnv1a64(h, buf.data(), n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed)
    throw std::runtime_error(path + ": read error");
  return h;
}

json state_to_json(const ProgramInfo &program, const TrainState &s) {
  json j;
  j["format"] = kStateFormat;
  j["version"] = kStateVersion;
  j["step"] = s.step;
  j["data"] = {{"epoch", s.data_epoch}, {"index", s.data_index}, {"shuffle", s.shuffle}};
  j["seed"] = s.seed;
  j["rng"] = json::array();
  for (uint64_t w : s.rng)
    j["rng"].push_back(hex64(w));
  j["elapsed_s"] = s.elapsed_s;
  j["last_loss"] = std::isfinite(s.last_loss) ? json(s.last_loss) : json(nullptr);
  j["tokens_seen"] = s.tokens_seen;
  j["model"] = {{"name", program.model_name},
                {"dtype", dtype_name(program.dtype)},
                {"batch", program.batch},
                {"seq_len", program.seq_len},
                {"vocab_size", program.vocab_size},
                {"param_numel", program.param_numel}};
  // The model's config.json, embedded as an object when it parses so that a
  // checkpoint directory is self-describing for conversion tools.
  const std::string config = program.config_json ? program.config_json : "";
  json parsed = json::parse(config, nullptr, /*allow_exceptions=*/false);
  j["config_json"] = parsed.is_discarded() ? json(config) : parsed;
  j["schedule"] = {{"peak_lr", s.schedule.peak_lr},
                   {"min_lr_ratio", s.schedule.min_lr_ratio},
                   {"warmup_steps", s.schedule.warmup_steps},
                   {"total_steps", s.schedule.total_steps}};
  j["optimizer"] = {{"name", "adamw"},
                    {"beta1", s.adamw.beta1},
                    {"beta2", s.adamw.beta2},
                    {"eps", s.adamw.eps},
                    {"weight_decay", s.adamw.weight_decay},
                    {"grad_clip", s.grad_clip},
                    {"grad_accum", s.grad_accum},
                    {"updates", s.optimizer_updates}};
  j["reliability"] = {{"attempts", s.attempts},
                      {"skipped_nonfinite", s.skipped_nonfinite},
                      {"skipped_spike", s.skipped_spike},
                      {"rollbacks", s.rollbacks},
                      {"last_rollback_target", s.last_rollback_target},
                      {"rollbacks_to_target", s.rollbacks_to_target}};
  j["anomaly"] = s.anomaly.to_json();
  return j;
}

TrainState state_from_json(const json &j, const std::string &path) {
  try {
    if (j.value("format", std::string()) != kStateFormat)
      throw std::runtime_error("not a llamart training state (\"format\" is not \"" +
                               std::string(kStateFormat) + "\")");
    const int version = j.at("version").get<int>();
    if (version != 1 && version != kStateVersion)
      throw std::runtime_error("unsupported version " + j.at("version").dump());
    TrainState s;
    s.step = j.at("step").get<int64_t>();
    s.data_epoch = j.at("data").at("epoch").get<uint64_t>();
    s.data_index = j.at("data").at("index").get<uint64_t>();
    s.shuffle = j.at("data").at("shuffle").get<bool>();
    s.seed = j.at("seed").get<uint64_t>();
    const json &rng = j.at("rng");
    if (!rng.is_array() || rng.size() != s.rng.size())
      throw std::runtime_error("\"rng\" must hold 4 words");
    for (size_t i = 0; i < s.rng.size(); ++i)
      s.rng[i] = parse_hex64(rng[i].get<std::string>(), "\"rng\"");
    s.elapsed_s = j.at("elapsed_s").get<double>();
    s.last_loss = j.at("last_loss").is_null() ? NAN : j.at("last_loss").get<double>();
    s.tokens_seen = j.at("tokens_seen").get<int64_t>();
    const json &sched = j.at("schedule");
    s.schedule.peak_lr = sched.at("peak_lr").get<double>();
    s.schedule.min_lr_ratio = sched.at("min_lr_ratio").get<double>();
    s.schedule.warmup_steps = sched.at("warmup_steps").get<int64_t>();
    s.schedule.total_steps = sched.at("total_steps").get<int64_t>();
    const json &opt = j.at("optimizer");
    s.adamw.beta1 = opt.at("beta1").get<double>();
    s.adamw.beta2 = opt.at("beta2").get<double>();
    s.adamw.eps = opt.at("eps").get<double>();
    s.adamw.weight_decay = opt.at("weight_decay").get<double>();
    s.grad_clip = opt.at("grad_clip").get<double>();
    s.grad_accum = opt.at("grad_accum").get<int64_t>();
    if (version == 1) {
      // Before skipped updates existed every step was an applied update; the
      // detector starts empty (with default settings) and warms up again.
      s.optimizer_updates = s.step;
      s.attempts = s.step;
    } else {
      s.optimizer_updates = opt.at("updates").get<int64_t>();
      const json &rel = j.at("reliability");
      s.attempts = rel.at("attempts").get<int64_t>();
      s.skipped_nonfinite = rel.at("skipped_nonfinite").get<int64_t>();
      s.skipped_spike = rel.at("skipped_spike").get<int64_t>();
      s.rollbacks = rel.at("rollbacks").get<int64_t>();
      s.last_rollback_target = rel.at("last_rollback_target").get<int64_t>();
      s.rollbacks_to_target = rel.at("rollbacks_to_target").get<int64_t>();
      s.anomaly = AnomalyDetector::from_json(j.at("anomaly"), "");
    }
    if (s.step < 0)
      throw std::runtime_error("negative step");
    if (s.optimizer_updates < 0 || s.optimizer_updates > s.step)
      throw std::runtime_error("\"optimizer\".\"updates\" must be in [0, step]");
    if (s.attempts < s.step)
      throw std::runtime_error("\"reliability\".\"attempts\" is below step");
    return s;
  } catch (const json::exception &e) {
    throw std::runtime_error(path + ": malformed training state: " + e.what());
  } catch (const std::runtime_error &e) {
    throw std::runtime_error(path + ": " + e.what());
  }
}

template <typename T>
std::string save_checkpoint(const ProgramInfo &program, const std::string &root,
                            const TrainState &state, const T *params,
                            const T *exp_avg, const T *exp_avg_sq,
                            int keep_last) {
  const T *flat[3] = {params, exp_avg, exp_avg_sq};
  return save_checkpoint<T>(
      program, root, state,
      CheckpointTensorSource<T>([&](const CheckpointTensor &t) {
        return flat[t.kind] + program.params[t.param].offset;
      }),
      keep_last);
}

namespace {

const char *const kTensorSuffix[3] = {"", ".exp_avg", ".exp_avg_sq"};

// The tensors of one file (kinds), sorted by name as the file lists them.
std::vector<CheckpointTensor> file_tensors(const ProgramInfo &program,
                                           std::initializer_list<int> kinds) {
  std::vector<std::pair<std::string, CheckpointTensor>> named;
  for (int kind : kinds)
    for (int32_t p = 0; p < program.num_params; ++p)
      named.push_back({std::string(program.params[p].name) + kTensorSuffix[kind], {p, kind}});
  std::sort(named.begin(), named.end(),
            [](const auto &a, const auto &b) { return a.first < b.first; });
  std::vector<CheckpointTensor> out;
  for (const auto &[name, t] : named)
    out.push_back(t);
  return out;
}

// Writes one safetensors file of the checkpoint from `source`.
template <typename T>
void write_streamed(const ProgramInfo &program, const std::string &path,
                    const std::vector<CheckpointTensor> &tensors,
                    const CheckpointTensorSource<T> &source) {
  std::vector<ckpt::TensorSpec> specs;
  for (const CheckpointTensor &t : tensors) {
    const ParamInfo &info = program.params[t.param];
    specs.push_back({std::string(info.name) + kTensorSuffix[t.kind],
                     std::is_same_v<T, float> ? ckpt::StDType::F32 : ckpt::StDType::F64,
                     param_shape(info)});
  }
  // HF loaders accept safetensors with format "pt" metadata.
  ckpt::SafetensorsWriter out(path, {{"format", "pt"}}, std::move(specs));
  for (const CheckpointTensor &t : tensors)
    out.write_next(source(t), sizeof(T) * size_t(program.params[t.param].numel));
  out.commit();
}

} // namespace

std::vector<CheckpointTensor> checkpoint_tensor_order(const ProgramInfo &program) {
  std::vector<CheckpointTensor> order = file_tensors(program, {0});
  for (const CheckpointTensor &t : file_tensors(program, {1, 2}))
    order.push_back(t);
  return order;
}

template <typename T>
std::string save_checkpoint(const ProgramInfo &program, const std::string &root,
                            const TrainState &state,
                            const CheckpointTensorSource<T> &source, int keep_last) {
  std::error_code ec;
  fs::create_directories(root, ec);
  if (ec)
    throw std::runtime_error(root + ": cannot create directory: " + ec.message());
  clean_interrupted_saves(root);

  const std::string name = checkpoint_name(state.step);
  const fs::path final_dir = fs::path(root) / name;
  const fs::path tmp_dir =
      fs::path(root) / (".tmp-" + name + "-" + std::to_string(getpid()));
  fs::create_directory(tmp_dir, ec);
  if (ec)
    throw std::runtime_error(tmp_dir.string() + ": cannot create directory: " +
                             ec.message());

  const std::string model_path = (tmp_dir / kModelFile).string();
  write_streamed<T>(program, model_path, file_tensors(program, {0}), source);
  const std::string optimizer_path = (tmp_dir / kOptimizerFile).string();
  write_streamed<T>(program, optimizer_path, file_tensors(program, {1, 2}), source);

  // Checksums of the bytes as they reached the disk, not of what we meant to
  // write.
  json j = state_to_json(program, state);
  j["checksums"] = {{kModelFile, "fnv1a64:" + hex64(fnv1a64_file(model_path))},
                    {kOptimizerFile, "fnv1a64:" + hex64(fnv1a64_file(optimizer_path))}};
  j[kStateChecksumKey] = state_checksum(j);
  ckpt::atomic_write_file((tmp_dir / kStateFile).string(), j.dump(2) + "\n");
  ckpt::fsync_dir(tmp_dir.string());

  // A checkpoint of the same step from an earlier, abandoned attempt is moved
  // aside first: rename() cannot replace a non-empty directory.
  if (fs::exists(final_dir, ec)) {
    const fs::path old_dir =
        fs::path(root) / (".old-" + name + "-" + std::to_string(getpid()));
    fs::rename(final_dir, old_dir, ec);
    if (ec)
      throw std::runtime_error(final_dir.string() + ": cannot move aside: " +
                               ec.message());
  }
  fs::rename(tmp_dir, final_dir, ec);
  if (ec)
    throw std::runtime_error(final_dir.string() + ": cannot rename into place: " +
                             ec.message());
  ckpt::fsync_dir(root);
  ckpt::atomic_write_file((fs::path(root) / kLatestFile).string(), name + "\n");
  ckpt::fsync_dir(root);
  clean_interrupted_saves(root);

  if (keep_last > 0) {
    std::vector<CheckpointRef> all = list_checkpoints(root);
    const size_t keep = static_cast<size_t>(keep_last);
    // The rollback target of an open burst (checkpoints written after skips
    // would otherwise push it out when --checkpoint-every is small).
    int64_t pinned = -1;
    if (state.anomaly.burst_skips() > 0)
      for (const CheckpointRef &c : all)
        if (c.step < state.anomaly.burst_first_step())
          pinned = c.step;
    for (size_t i = 0; i + keep < all.size(); ++i) {
      if (all[i].step == state.step || all[i].step == pinned)
        continue;
      // The new checkpoint is committed; failing to delete an old one must
      // not stop the run. It stays listed and the next rotation retries.
      try {
        remove_checkpoint_dir(all[i].path);
      } catch (const std::runtime_error &) {
      }
    }
  }
  return final_dir.string();
}

namespace {

json verify_checkpoint_unwrapped(const std::string &dir, const std::string &state_path) {
  json j;
  try {
    j = json::parse(read_text_file(state_path));
  } catch (const json::exception &e) {
    throw std::runtime_error(state_path + ": malformed JSON: " + e.what());
  }
  if (!j.is_object())
    throw std::runtime_error(state_path + ": not a JSON object");
  // Version 1 files predate the self-checksum. Whether one is present decides
  // too, so a damaged "version" cannot switch the check off.
  if (j.contains(kStateChecksumKey) || j.value("version", 0) != 1) {
    if (!j.contains(kStateChecksumKey) || !j[kStateChecksumKey].is_string())
      throw std::runtime_error(state_path + ": missing \"" +
                               std::string(kStateChecksumKey) + "\"");
    const std::string want = j[kStateChecksumKey].get<std::string>();
    const std::string got = state_checksum(j);
    if (want != got)
      throw std::runtime_error(state_path + ": checksum mismatch (it says " + want +
                               ", its content has " + got + ")");
  }
  state_from_json(j, state_path); // every field present and in range
  if (!j.contains("checksums") || !j["checksums"].is_object())
    throw std::runtime_error(state_path + ": missing \"checksums\"");
  for (const char *file : {kModelFile, kOptimizerFile}) {
    const std::string path = (fs::path(dir) / file).string();
    if (!j["checksums"].contains(file))
      throw std::runtime_error(state_path + ": no checksum for " + file);
    const std::string expected = j["checksums"][file].get<std::string>();
    const std::string prefix = "fnv1a64:";
    if (expected.rfind(prefix, 0) != 0)
      throw std::runtime_error(state_path + ": unknown checksum kind for " +
                               file + ": " + expected);
    std::error_code ec;
    if (!fs::exists(path, ec))
      throw std::runtime_error(path + ": missing");
    const uint64_t want = parse_hex64(expected.substr(prefix.size()), state_path);
    const uint64_t got = fnv1a64_file(path);
    if (got != want)
      throw std::runtime_error(path + ": checksum mismatch (state.json says " +
                               hex64(want) + ", file has " + hex64(got) + ")");
  }
  return j;
}

} // namespace

json verify_checkpoint(const std::string &dir) {
  const std::string state_path = (fs::path(dir) / kStateFile).string();
  try {
    return verify_checkpoint_unwrapped(dir, state_path);
  } catch (const json::exception &e) {
    // A value of the wrong type (a damaged file that still parses).
    throw std::runtime_error(state_path + ": malformed training state: " + e.what());
  }
}

std::optional<CheckpointRef>
find_resume_checkpoint(const std::string &root, const Warn &warn,
                       int64_t before_step, std::vector<CheckpointRef> *rejected) {
  std::vector<CheckpointRef> candidates; // newest first
  for (const CheckpointRef &c : list_checkpoints(root))
    if (c.step < before_step)
      candidates.insert(candidates.begin(), c);
  if (candidates.empty())
    return std::nullopt;

  // A step_N directory is complete by construction (it is renamed into place
  // after everything in it is fsynced), so the newest one wins even when a
  // crash came between that rename and the update of LATEST.
  const fs::path latest_path = fs::path(root) / kLatestFile;
  std::error_code ec;
  if (before_step == INT64_MAX && fs::exists(latest_path, ec)) {
    const std::string name = trim(read_text_file(latest_path.string()));
    const std::string newest = fs::path(candidates.front().path).filename().string();
    if (name != newest)
      warn(latest_path.string() + ": names '" + name + "', but " + newest +
           " is the newest complete checkpoint (a save was interrupted before "
           "LATEST was updated); using " + newest);
  }

  for (size_t i = 0; i < candidates.size(); ++i) {
    try {
      verify_checkpoint(candidates[i].path);
      return candidates[i];
    } catch (const std::exception &e) {
      if (rejected)
        rejected->push_back(candidates[i]);
      const bool more = i + 1 < candidates.size();
      warn(std::string(e.what()) + (more ? "; falling back to " +
                                               fs::path(candidates[i + 1].path)
                                                   .filename()
                                                   .string()
                                         : ""));
    }
  }
  throw std::runtime_error(root + ": no checkpoint" +
                           (before_step == INT64_MAX
                                ? std::string()
                                : " before step " + std::to_string(before_step)) +
                           " passes verification");
}

template <typename T>
TrainState load_checkpoint(const ProgramInfo &program, const std::string &dir,
                           T *params, T *exp_avg, T *exp_avg_sq) {
  const std::string state_path = (fs::path(dir) / kStateFile).string();
  const json j = json::parse(read_text_file(state_path), nullptr, false);
  if (j.is_discarded())
    throw std::runtime_error(state_path + ": malformed JSON");
  TrainState state = state_from_json(j, state_path);

  const std::string model_path = (fs::path(dir) / kModelFile).string();
  load_param_tensors<T>(program, ckpt::read_safetensors(model_path), model_path,
                        {{"", params}});
  if (exp_avg && exp_avg_sq) {
    const std::string opt_path = (fs::path(dir) / kOptimizerFile).string();
    load_param_tensors<T>(program, ckpt::read_safetensors(opt_path), opt_path,
                          {{".exp_avg", exp_avg}, {".exp_avg_sq", exp_avg_sq}});
  }
  return state;
}

template <typename T>
std::string load_model_weights(const ProgramInfo &program,
                               const std::string &path, T *params,
                               const Warn &warn) {
  std::error_code ec;
  const fs::path p(path);
  if (fs::is_regular_file(p, ec)) {
    load_param_tensors<T>(program, ckpt::read_safetensors(path), path,
                          {{"", params}});
    return path;
  }
  if (!fs::is_directory(p, ec))
    throw std::runtime_error(path + ": no such file or directory");
  // A Hugging Face model folder (config.json + safetensors) or a Meta one
  // (params.json + consolidated.NN.pth): our checkpoint directories hold
  // neither, so they cannot be confused. A folder with both (an HF repo with
  // Meta's files next to its own) reads as HF.
  if (!fs::exists(p / kStateFile, ec) && ckpt::is_hf_model_folder(path))
    return interop::load_hf_folder_weights<T>(program, path, params);
  if (!fs::exists(p / kStateFile, ec) && ckpt::is_meta_model_folder(path))
    return interop::load_meta_folder_weights<T>(program, path, params);

  std::string dir;
  if (fs::exists(p / kStateFile, ec)) {
    verify_checkpoint(path);
    dir = path;
  } else {
    const fs::path root = fs::exists(p / kLatestFile, ec) ? p : p / "checkpoints";
    std::optional<CheckpointRef> ref = find_resume_checkpoint(root.string(), warn);
    if (!ref)
      throw std::runtime_error(path + ": not a checkpoint, a checkpoints "
                                      "directory or a run directory with checkpoints");
    dir = ref->path;
  }
  const std::string model_path = (fs::path(dir) / kModelFile).string();
  load_param_tensors<T>(program, ckpt::read_safetensors(model_path), model_path,
                        {{"", params}});
  return model_path;
}

#define LLAMART_INSTANTIATE(T)                                                 \
  template std::string save_checkpoint<T>(const ProgramInfo &,                 \
                                          const std::string &,                 \
                                          const TrainState &, const T *,       \
                                          const T *, const T *, int);          \
  template std::string save_checkpoint<T>(const ProgramInfo &,                 \
                                          const std::string &,                 \
                                          const TrainState &,                  \
                                          const CheckpointTensorSource<T> &,   \
                                          int);                                \
  template TrainState load_checkpoint<T>(const ProgramInfo &,                  \
                                         const std::string &, T *, T *, T *);  \
  template std::string load_model_weights<T>(                                  \
      const ProgramInfo &, const std::string &, T *, const Warn &);
LLAMART_INSTANTIATE(float)
LLAMART_INSTANTIATE(double)
#undef LLAMART_INSTANTIATE

} // namespace llamart::train
