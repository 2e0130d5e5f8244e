#include "runtime/tokenizer/bpe.h"

#include "runtime/tokenizer/unicode.h"

#include <atomic>
#include <cstdio>
#include <queue>
#include <unordered_map>

namespace llamart::tokenizer {

namespace {

// The word cache of the calling thread, for one model at a time (`owner`):
// thread-local, so concurrent encodes share nothing and take no lock.
struct WordCache {
  uint64_t owner = 0;
  std::unordered_map<std::string, std::vector<int32_t>> words;
};
thread_local WordCache word_cache;
// Words longer than this are rare repeats (and Llama-2's whole paragraphs).
constexpr size_t kMaxCachedWordBytes = 64;
constexpr size_t kMaxCachedWords = size_t(1) << 16;
std::atomic<uint64_t> next_instance{1};

} // namespace

BpeModel::BpeModel(const json &spec, const JsonLoc &at) : instance_(next_instance++) {
  const json &vocab = require(spec, "vocab", at);
  if (!vocab.is_object())
    (at / "vocab").fail("expected an object of token -> id");
  int64_t max_id = -1;
  for (const auto &[token, id] : vocab.items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= INT32_MAX)
      (at / "vocab").fail("token \"" + token + "\" has an invalid id");
    max_id = std::max(max_id, id.get<int64_t>());
  }
  // Ids index a dense table; a few gaps are fine, a hostile 2^31 is not.
  if (max_id >= 2 * static_cast<int64_t>(vocab.size()) + 1024)
    (at / "vocab").fail("ids are sparse: " + std::to_string(vocab.size()) +
                        " tokens with ids up to " + std::to_string(max_id));
  pieces_.resize(static_cast<size_t>(max_id + 1));
  has_piece_.assign(pieces_.size(), false);
  for (const auto &[token, id] : vocab.items()) {
    const auto i = static_cast<size_t>(id.get<int64_t>());
    if (has_piece_[i])
      (at / "vocab").fail("id " + std::to_string(i) + " is used by both \"" + pieces_[i] +
                          "\" and \"" + token + "\"");
    pieces_[i] = token;
    has_piece_[i] = true;
  }
  ids_.build(pieces_, has_piece_);

  if (const json *dropout = optional_member(spec, "dropout"))
    if (!dropout->is_number() || dropout->get<double>() != 0.0)
      (at / "dropout").fail("unsupported BPE dropout (encoding would not be deterministic)");
  for (const char *key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (const auto v = get_optional_string(spec, key, at); v && !v->empty())
      (at / key).fail("unsupported BPE option");
  fuse_unk_ = get_bool(spec, "fuse_unk", false, at);
  byte_fallback_ = get_bool(spec, "byte_fallback", false, at);
  ignore_merges_ = get_bool(spec, "ignore_merges", false, at);
  if (const auto unk = get_optional_string(spec, "unk_token", at)) {
    const auto id = token_to_id(*unk);
    if (!id)
      (at / "unk_token").fail("\"" + *unk + "\" is not in the vocabulary");
    unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    byte_ids_[b] = token_to_id(name).value_or(-1);
  }

  const json &merges = require(spec, "merges", at);
  if (!merges.is_array())
    (at / "merges").fail("expected an array");
  merges_.reserve(merges.size());
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json &m = merges[rank];
    auto here = [&] { return (at / "merges")[rank]; };
    std::string a, b;
    if (m.is_string()) {
      const std::string &s = m.get_ref<const std::string &>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos)
        here().fail("expected \"left right\" with exactly one space, got \"" + s + "\"");
      a.assign(s, 0, space);
      b.assign(s, space + 1, std::string::npos);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    } else {
      here().fail("expected \"left right\" or [\"left\", \"right\"]");
    }
    const auto ia = token_to_id(a), ib = token_to_id(b), inew = token_to_id(a + b);
    if (!ia || !ib)
      here().fail("\"" + (ia ? b : a) + "\" is not in the vocabulary");
    if (!inew)
      here().fail("the merged token \"" + a + b + "\" is not in the vocabulary");
    // A repeated pair keeps its last rank, as HF's map insertion does.
    merges_.set(*ia, *ib, Merge{static_cast<int32_t>(rank), *inew});
  }
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  const int32_t id = ids_.find(token);
  return id < 0 ? std::nullopt : std::optional<int32_t>(id);
}

const std::string *BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || id >= id_end() || !has_piece_[static_cast<size_t>(id)])
    return nullptr;
  return &pieces_[static_cast<size_t>(id)];
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t> &out) const {
  if (word.size() > kMaxCachedWordBytes) {
    merge_word(word, out);
    return;
  }
  WordCache &cache = word_cache;
  if (cache.owner != instance_) {
    cache.words.clear();
    cache.owner = instance_;
  }
  std::string key(word);
  if (const auto it = cache.words.find(key); it != cache.words.end()) {
    out.insert(out.end(), it->second.begin(), it->second.end());
    return;
  }
  std::vector<int32_t> ids;
  merge_word(word, ids);
  out.insert(out.end(), ids.begin(), ids.end());
  if (cache.words.size() >= kMaxCachedWords)
    cache.words.clear();
  cache.words.emplace(std::move(key), std::move(ids));
}

void BpeModel::merge_word(std::string_view word, std::vector<int32_t> &out) const {
  if (ignore_merges_)
    if (const auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }

  // Initial symbols: one per character (HF's merge_word).
  std::vector<int32_t> symbols;
  symbols.reserve(word.size());
  std::optional<int32_t> pending_unk;
  for (size_t i = 0; i < word.size();) {
    const size_t n = std::min(utf8_length(static_cast<unsigned char>(word[i])), word.size() - i);
    const std::string_view ch = word.substr(i, n);
    i += n;
    if (const auto id = token_to_id(ch)) {
      if (pending_unk) {
        symbols.push_back(*pending_unk);
        pending_unk.reset();
      }
      symbols.push_back(*id);
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (char c : ch)
        all = all && byte_ids_[static_cast<unsigned char>(c)] >= 0;
      if (all) {
        // HF pushes byte tokens without flushing a pending unk first.
        for (char c : ch)
          symbols.push_back(byte_ids_[static_cast<unsigned char>(c)]);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk && !fuse_unk_)
        symbols.push_back(*pending_unk);
      pending_unk = unk_id_;
    }
    // Without an unk token an unknown character is dropped, as in HF.
  }
  if (pending_unk)
    symbols.push_back(*pending_unk);

  // Linked list over `symbols`; merged-away entries get id -1.
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i)
    prev[i] = i - 1, next[i] = i + 1 < n ? i + 1 : -1;

  struct Candidate {
    int32_t rank;
    int pos;
    int32_t new_id;
    bool operator<(const Candidate &o) const { // max-heap -> lowest rank, then leftmost
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  for (int i = 0; i + 1 < n; ++i)
    if (const Merge *m = find_merge(symbols[i], symbols[i + 1]))
      queue.push({m->rank, i, m->new_id});

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int right = next[top.pos];
    if (symbols[top.pos] < 0 || right < 0)
      continue;
    // Stale entry: one side has been merged with something else since.
    const Merge *m = find_merge(symbols[top.pos], symbols[right]);
    if (!m || m->new_id != top.new_id)
      continue;
    symbols[top.pos] = top.new_id;
    symbols[right] = -1;
    next[top.pos] = next[right];
    if (next[right] >= 0)
      prev[next[right]] = top.pos;
    if (prev[top.pos] >= 0)
      if (const Merge *l = find_merge(symbols[prev[top.pos]], top.new_id))
        queue.push({l->rank, prev[top.pos], l->new_id});
    if (next[top.pos] >= 0)
      if (const Merge *r = find_merge(top.new_id, symbols[next[top.pos]]))
        queue.push({r->rank, top.pos, r->new_id});
  }
  for (int i = 0; i < n; ++i)
    if (symbols[i] >= 0)
      out.push_back(symbols[i]);
}

} // namespace llamart::tokenizer
