// Open-addressing hash indexes for the BPE model's two hot lookups (piece ->
// id and (left id, right id) -> merge), which run several times per
// character encoded and ~1M times while loading Llama-3. Node-based
// std::unordered_map costs a cache miss per probe there; these keep keys'
// hashes and values in one flat array with linear probing.
#pragma once
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace llamart::tokenizer {

inline uint64_t hash_bytes(std::string_view s) {
  // FNV-1a then a murmur-style finalizer: fast on short pieces, well mixed.
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s)
    h = (h ^ c) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  return h;
}

inline uint64_t hash_u64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  x ^= x >> 33;
  return x;
}

inline size_t table_size_for(size_t n) {
  size_t cap = 16;
  while (cap < 2 * n)
    cap <<= 1;
  return cap;
}

// Strings (owned elsewhere, e.g. the id -> piece table) to int32 ids.
class StringIndex {
public:
  // `strings` must outlive the index and not move.
  void build(const std::vector<std::string> &strings, const std::vector<bool> &present) {
    strings_ = &strings;
    slots_.assign(table_size_for(strings.size()), Slot{0, -1});
    for (size_t i = 0; i < strings.size(); ++i)
      if (present[i])
        insert(strings[i], static_cast<int32_t>(i));
  }
  // The id of `s`, or -1.
  int32_t find(std::string_view s) const {
    if (slots_.empty())
      return -1;
    const uint64_t h = hash_bytes(s);
    const size_t mask = slots_.size() - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
      const Slot &slot = slots_[i];
      if (slot.id < 0)
        return -1;
      if (slot.hash == static_cast<uint32_t>(h) && (*strings_)[static_cast<size_t>(slot.id)] == s)
        return slot.id;
    }
  }

private:
  struct Slot {
    uint32_t hash; // low bits of the full hash, to skip most string compares
    int32_t id;    // -1: empty
  };
  void insert(std::string_view s, int32_t id) {
    const uint64_t h = hash_bytes(s);
    const size_t mask = slots_.size() - 1;
    size_t i = h & mask;
    while (slots_[i].id >= 0)
      i = (i + 1) & mask;
    slots_[i] = Slot{static_cast<uint32_t>(h), id};
  }
  const std::vector<std::string> *strings_ = nullptr;
  std::vector<Slot> slots_;
};

// (left id, right id) -> (rank, merged id).
class PairIndex {
public:
  struct Value {
    int32_t rank;
    int32_t new_id;
  };
  void reserve(size_t n) { slots_.assign(table_size_for(n), Slot{kEmpty, {0, 0}}); }
  // Inserts or overwrites.
  void set(int32_t a, int32_t b, Value v) {
    const uint64_t key = pack(a, b);
    const size_t mask = slots_.size() - 1;
    size_t i = hash_u64(key) & mask;
    while (slots_[i].key != kEmpty && slots_[i].key != key)
      i = (i + 1) & mask;
    if (slots_[i].key == kEmpty)
      ++size_;
    slots_[i] = Slot{key, v};
  }
  const Value *find(int32_t a, int32_t b) const {
    if (slots_.empty())
      return nullptr;
    const uint64_t key = pack(a, b);
    const size_t mask = slots_.size() - 1;
    for (size_t i = hash_u64(key) & mask;; i = (i + 1) & mask) {
      if (slots_[i].key == key)
        return &slots_[i].value;
      if (slots_[i].key == kEmpty)
        return nullptr;
    }
  }
  size_t size() const { return size_; }

private:
  static constexpr uint64_t kEmpty = ~0ull; // ids are < 2^31, so never a key
  static uint64_t pack(int32_t a, int32_t b) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
  }
  struct Slot {
    uint64_t key;
    Value value;
  };
  std::vector<Slot> slots_;
  size_t size_ = 0;
};

} // namespace llamart::tokenizer
