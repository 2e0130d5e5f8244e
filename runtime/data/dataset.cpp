// Dataset: the shards of one split viewed as training windows.
//
// Shard s with N_s tokens holds floor((N_s - 1) / T) windows of T + 1 tokens
// at stride T: window k covers tokens [k*T, k*T + T], so consecutive windows
// share one token (the last target of one is the first input of the next)
// and no token pair (t, t+1) inside a shard is lost except the tail after
// the last full window. Windows never straddle shards because shards are
// independent document streams written separately.
//
// Global window w lives in the shard s with first_window[s] <= w <
// first_window[s + 1]. An epoch visits every window once in the order
// epoch_permutation(seed, epoch) (see shuffle.h), so (epoch, index) is the
// whole loader state a checkpoint has to record.
#include "runtime/data/shards.h"
#include "runtime/data/shuffle.h"

#include <algorithm>
#include <filesystem>
#include <mutex>
#include <stdexcept>

namespace llamart::data {

struct Dataset::Impl {
  std::string dir;
  std::string split;
  uint64_t seq_len = 0;
  uint64_t seed = 0;
  bool shuffle = true;
  std::vector<std::unique_ptr<Shard>> shards;
  std::vector<uint64_t> first_window; // prefix sums, shards.size() + 1 entries
  uint64_t num_windows = 0;
  Position position;

  // The permutation of the most recently used epoch. window() is const but
  // fills this cache, so it is guarded; next_batch touches one epoch (two
  // at an epoch boundary) and rebuilds it at most once per epoch.
  mutable std::mutex cache_mutex;
  mutable uint64_t cached_epoch = 0;
  mutable bool cache_valid = false;
  mutable std::vector<uint32_t> permutation;

  uint64_t global_window(uint64_t epoch, uint64_t index) const {
    if (!shuffle)
      return index;
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (!cache_valid || cached_epoch != epoch) {
      epoch_permutation(seed, epoch, num_windows, permutation);
      cached_epoch = epoch;
      cache_valid = true;
    }
    return permutation[index];
  }

  void copy_window(uint64_t w, int32_t *tokens, int32_t *targets) const {
    // upper_bound finds the first shard starting after w; w is in the one
    // before it. Shards without windows have equal neighbours and are skipped.
    const auto it = std::upper_bound(first_window.begin(), first_window.end(), w);
    const size_t s = static_cast<size_t>(it - first_window.begin()) - 1;
    const Shard &shard = *shards[s];
    const uint64_t start = (w - first_window[s]) * seq_len;
    int32_t prev = shard.at(start);
    for (uint64_t t = 0; t < seq_len; ++t) {
      const int32_t next = shard.at(start + t + 1);
      tokens[t] = prev;
      targets[t] = next;
      prev = next;
    }
  }
};

Dataset::Dataset(const std::string &dir, const std::string &split, int64_t seq_len,
                 uint64_t model_vocab_size, uint64_t seed, bool shuffle)
    : impl_(std::make_shared<Impl>()) {
  namespace fs = std::filesystem;
  if (seq_len < 1)
    throw std::runtime_error(dir + ": seq_len must be >= 1, got " + std::to_string(seq_len));
  if (split.empty() || split.find('/') != std::string::npos)
    throw std::runtime_error(dir + ": invalid split name '" + split + "'");
  Impl &d = *impl_;
  d.dir = dir;
  d.split = split;
  d.seq_len = static_cast<uint64_t>(seq_len);
  d.seed = seed;
  d.shuffle = shuffle;

  std::vector<std::string> paths;
  const std::string prefix = split + "_";
  const std::string suffix = ".tok";
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  if (ec)
    throw std::runtime_error(dir + ": cannot list directory: " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec)
      throw std::runtime_error(dir + ": cannot list directory: " + ec.message());
    const std::string name = it->path().filename().string();
    if (name.size() > prefix.size() + suffix.size() && name.compare(0, prefix.size(), prefix) == 0 &&
        name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
      paths.push_back(it->path().string());
  }
  if (paths.empty())
    throw std::runtime_error(dir + ": no " + split + "_*.tok shards");
  // Directory order is arbitrary; name order makes the window numbering
  // (and hence every batch) reproducible.
  std::sort(paths.begin(), paths.end());

  d.first_window.push_back(0);
  uint64_t total_tokens = 0;
  for (const auto &path : paths) {
    auto shard = std::make_unique<Shard>(path);
    if (shard->header().vocab_size > model_vocab_size)
      throw std::runtime_error(path + ": shard vocab_size " +
                               std::to_string(shard->header().vocab_size) +
                               " exceeds the model's vocab_size " +
                               std::to_string(model_vocab_size));
    const uint64_t n = shard->size();
    total_tokens += n;
    const uint64_t windows = n >= 1 ? (n - 1) / d.seq_len : 0;
    d.first_window.push_back(d.first_window.back() + windows);
    d.shards.push_back(std::move(shard));
  }
  d.num_windows = d.first_window.back();
  if (d.num_windows == 0)
    throw std::runtime_error(dir + ": the " + split + " shards hold " +
                             std::to_string(total_tokens) +
                             " tokens, not one window of seq_len + 1 = " +
                             std::to_string(seq_len + 1) + " tokens in any shard");
  // The permutation is stored as uint32 to halve its memory; 2^32 windows of
  // even 512 tokens is 2 T tokens per split, beyond any single data set here.
  if (shuffle && d.num_windows > (uint64_t(1) << 32))
    throw std::runtime_error(dir + ": " + std::to_string(d.num_windows) +
                             " windows exceed the shuffler's 2^32 limit; split the data set");
}

uint64_t Dataset::num_windows() const { return impl_->num_windows; }

void Dataset::window(uint64_t epoch, uint64_t index, int32_t *tokens, int32_t *targets) const {
  const Impl &d = *impl_;
  if (index >= d.num_windows)
    throw std::out_of_range(d.dir + ": window index " + std::to_string(index) +
                            " out of range (" + std::to_string(d.num_windows) + " " +
                            d.split + " windows)");
  d.copy_window(d.global_window(epoch, index), tokens, targets);
}

void Dataset::next_batch(int64_t batch, int32_t *tokens, int32_t *targets) {
  next_batch(batch, 0, batch, tokens, targets);
}

void Dataset::next_batch(int64_t batch, int64_t first, int64_t count, int32_t *tokens,
                         int32_t *targets) {
  Impl &d = *impl_;
  if (batch < 0)
    throw std::runtime_error(d.dir + ": negative batch size " + std::to_string(batch));
  if (first < 0 || count < 0 || first + count > batch)
    throw std::runtime_error(d.dir + ": sequences [" + std::to_string(first) + ", " +
                             std::to_string(first + count) + ") are not in a batch of " +
                             std::to_string(batch));
  for (int64_t b = 0; b < batch; ++b) {
    if (b >= first && b < first + count)
      window(d.position.epoch, d.position.index, tokens + (b - first) * d.seq_len,
             targets + (b - first) * d.seq_len);
    if (++d.position.index == d.num_windows) {
      d.position.index = 0;
      ++d.position.epoch;
    }
  }
}

Dataset::Position Dataset::position() const { return impl_->position; }

void Dataset::set_position(Position p) {
  if (p.index >= impl_->num_windows)
    throw std::runtime_error(impl_->dir + ": data position index " + std::to_string(p.index) +
                             " is past the " + std::to_string(impl_->num_windows) + " " +
                             impl_->split + " windows (was the data set changed since the "
                             "checkpoint?)");
  impl_->position = p;
}

} // namespace llamart::data
