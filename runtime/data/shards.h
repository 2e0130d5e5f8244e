// Token shards: the on-disk format written by `llama-tokenize encode` and read
// (memory-mapped) by the training driver.
//
// File layout (little-endian):
//   offset 0   char[8]  magic "LLMTOKS\0"
//   offset 8   u32      version (= 1)
//   offset 12  u32      dtype: 0 = uint16, 1 = int32 (uint16 when vocab <= 65535)
//   offset 16  u64      vocab_size
//   offset 24  u64      token count N
//   offset 32  u64      FNV-1a 64 checksum of the token bytes
//   offset 40  pad to 64
//   offset 64  N tokens
// A dataset directory holds train_NNNNN.tok and val_NNNNN.tok shards.
#pragma once
#include <cstdint>
#include <string>
#include <memory>
#include <vector>

namespace llamart::data {

struct ShardHeader {
  uint32_t version;
  uint32_t dtype;
  uint64_t vocab_size;
  uint64_t num_tokens;
  uint64_t checksum;
};

// Writes atomically (temp name, fsync, rename). Throws std::runtime_error
// naming the file on failure.
void write_shard(const std::string &path, const std::vector<int32_t> &tokens,
                 uint64_t vocab_size);

// A read-only memory-mapped shard. The constructor validates magic, version,
// dtype, size against N and the checksum, and throws std::runtime_error with
// "<path>: <what is wrong>" otherwise.
class Shard {
public:
  explicit Shard(const std::string &path);
  ~Shard();
  Shard(const Shard &) = delete;
  Shard &operator=(const Shard &) = delete;
  const ShardHeader &header() const { return header_; }
  uint64_t size() const { return header_.num_tokens; }
  int32_t at(uint64_t i) const;
  const std::string &path() const { return path_; }

private:
  std::string path_;
  ShardHeader header_{};
  const uint8_t *base_ = nullptr;
  size_t mapped_bytes_ = 0;
  const uint8_t *tokens_ = nullptr;
};

// All shards of a split ("train" or "val") of a dataset directory, viewed as
// windows of seq_len + 1 consecutive tokens (windows never straddle shards).
// Window order within an epoch is a deterministic permutation from
// (seed, epoch); position = (epoch, index in epoch) is all that resume needs.
// Tokens >= vocab_size of the model are rejected with the shard named.
class Dataset {
public:
  Dataset(const std::string &dir, const std::string &split, int64_t seq_len,
          uint64_t model_vocab_size, uint64_t seed, bool shuffle);
  uint64_t num_windows() const;
  // Fill tokens/targets ([batch, seq_len] int32 each) with the next `batch`
  // windows and advance the position (rolling into the next epoch).
  void next_batch(int64_t batch, int32_t *tokens, int32_t *targets);
  // The same advance, filling only sequences [first, first + count) of the
  // batch (tokens/targets: [count, seq_len]): a data-parallel rank's part.
  void next_batch(int64_t batch, int64_t first, int64_t count, int32_t *tokens,
                  int32_t *targets);
  struct Position { uint64_t epoch = 0; uint64_t index = 0; };
  Position position() const;
  void set_position(Position p);
  // Window w (in shuffled order of epoch `epoch`) without moving.
  void window(uint64_t epoch, uint64_t index, int32_t *tokens,
              int32_t *targets) const;

private:
  /* implementation-defined */
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

} // namespace llamart::data
