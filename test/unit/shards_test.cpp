// Token shards and the windowed Dataset (runtime/data).
//
// References are independent of the code under test: the FNV-1a checksum is
// checked against the published test vectors, window counts against a
// brute-force enumeration, and window contents against shards whose tokens
// encode their own position.
#include "runtime/data/shards.h"
#include "runtime/data/shuffle.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>

namespace fs = std::filesystem;
using llamart::data::Dataset;
using llamart::data::Shard;
using llamart::data::write_shard;

namespace {

class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "shards_test.XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
      throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string file(const std::string &name) const { return (path_ / name).string(); }
  std::string str() const { return path_.string(); }

private:
  fs::path path_;
};

std::string read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void write_bytes(const std::string &path, const std::string &bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// Reference FNV-1a 64, itself pinned to the published vectors below.
uint64_t fnv1a_ref(const std::string &bytes) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return h;
}

uint64_t u64_at(const std::string &bytes, size_t off) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + off, 8);
  return v;
}

// Expects `fn` to throw std::runtime_error whose message names `path` and
// contains `what`.
template <typename Fn>
void expect_error(Fn fn, const std::string &path, const std::string &what) {
  try {
    fn();
    ADD_FAILURE() << "no exception; expected '" << what << "' for " << path;
  } catch (const std::runtime_error &e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << msg;
  }
}

TEST(Fnv1a, ReferenceMatchesPublishedVectors) {
  EXPECT_EQ(fnv1a_ref(""), 0xcbf29ce484222325ull);
  EXPECT_EQ(fnv1a_ref("a"), 0xaf63dc4c8601ec8cull);
  EXPECT_EQ(fnv1a_ref("foobar"), 0x85944171f73967e8ull);
}

TEST(Shard, RoundTripUint16) {
  TempDir dir;
  std::vector<int32_t> tokens;
  for (int i = 0; i < 5000; ++i)
    tokens.push_back((i * 7919) % 1000);
  tokens.push_back(999);
  const std::string path = dir.file("train_00000.tok");
  write_shard(path, tokens, 1000);

  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 64 + 2 * tokens.size());
  EXPECT_EQ(std::memcmp(bytes.data(), "LLMTOKS\0", 8), 0);
  EXPECT_EQ(u64_at(bytes, 32), fnv1a_ref(bytes.substr(64)));
  for (size_t off = 40; off < 64; ++off)
    EXPECT_EQ(bytes[off], '\0') << "padding byte " << off;

  Shard shard(path);
  EXPECT_EQ(shard.header().version, 1u);
  EXPECT_EQ(shard.header().dtype, 0u);
  EXPECT_EQ(shard.header().vocab_size, 1000u);
  ASSERT_EQ(shard.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    ASSERT_EQ(shard.at(i), tokens[i]) << i;
  EXPECT_EQ(shard.path(), path);
  // Only the shard is left: the temporary file was renamed, not copied.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 1);
}

TEST(Shard, RoundTripInt32) {
  TempDir dir;
  const std::vector<int32_t> tokens = {0, 1, 65535, 65536, 99999, 12345, 70000};
  const std::string path = dir.file("t.tok");
  write_shard(path, tokens, 100000);
  const std::string bytes = read_bytes(path);
  ASSERT_EQ(bytes.size(), 64 + 4 * tokens.size());
  EXPECT_EQ(u64_at(bytes, 32), fnv1a_ref(bytes.substr(64)));
  Shard shard(path);
  EXPECT_EQ(shard.header().dtype, 1u);
  ASSERT_EQ(shard.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i)
    EXPECT_EQ(shard.at(i), tokens[i]);
}

TEST(Shard, DtypeBoundaryAt65535) {
  TempDir dir;
  write_shard(dir.file("a.tok"), {65534, 0}, 65535);
  write_shard(dir.file("b.tok"), {65535, 0}, 65536);
  EXPECT_EQ(Shard(dir.file("a.tok")).header().dtype, 0u);
  EXPECT_EQ(Shard(dir.file("a.tok")).at(0), 65534);
  EXPECT_EQ(Shard(dir.file("b.tok")).header().dtype, 1u);
  EXPECT_EQ(Shard(dir.file("b.tok")).at(0), 65535);
}

TEST(Shard, ChecksumIsFnv1aOfStoredBytes) {
  // uint16 LE tokens whose bytes spell "foobar": the header must carry the
  // published FNV-1a 64 of "foobar".
  TempDir dir;
  const std::string path = dir.file("foobar.tok");
  write_shard(path, {0x6f66, 0x626f, 0x7261}, 30000);
  EXPECT_EQ(read_bytes(path).substr(64), "foobar");
  EXPECT_EQ(Shard(path).header().checksum, 0x85944171f73967e8ull);
}

TEST(Shard, EmptyShard) {
  TempDir dir;
  write_shard(dir.file("e.tok"), {}, 10);
  Shard shard(dir.file("e.tok"));
  EXPECT_EQ(shard.size(), 0u);
  EXPECT_EQ(shard.header().checksum, 0xcbf29ce484222325ull);
  EXPECT_THROW(shard.at(0), std::out_of_range);
}

TEST(Shard, WriterRejectsBadInput) {
  TempDir dir;
  const std::string path = dir.file("bad.tok");
  expect_error([&] { write_shard(path, {1, 10, 2}, 10); }, path, "token 10 at index 1");
  expect_error([&] { write_shard(path, {-1}, 10); }, path, "token -1 at index 0");
  expect_error([&] { write_shard(path, {0}, 0); }, path, "vocab_size 0");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 0);
  const std::string missing = dir.file("no/such/dir/x.tok");
  expect_error([&] { write_shard(missing, {0}, 10); }, missing, "cannot create");
}

TEST(Shard, AtOutOfRangeThrows) {
  TempDir dir;
  write_shard(dir.file("s.tok"), {1, 2, 3}, 10);
  Shard shard(dir.file("s.tok"));
  EXPECT_EQ(shard.at(2), 3);
  EXPECT_THROW(shard.at(3), std::out_of_range);
}

class CorruptShard : public ::testing::Test {
protected:
  void SetUp() override {
    path = dir.file("train_00000.tok");
    std::vector<int32_t> tokens;
    for (int i = 0; i < 100; ++i)
      tokens.push_back(i * 3);
    write_shard(path, tokens, 300);
    good = read_bytes(path);
  }
  void expect_open_fails(const std::string &bytes, const std::string &what) {
    write_bytes(path, bytes);
    expect_error([&] { Shard s(path); }, path, what);
  }
  TempDir dir;
  std::string path, good;
};

TEST_F(CorruptShard, FlippedTokenByteIsChecksumMismatch) {
  std::string bytes = good;
  bytes[64 + 37] ^= 0x01;
  expect_open_fails(bytes, "checksum mismatch");
}

TEST_F(CorruptShard, FlippedChecksumByteIsChecksumMismatch) {
  std::string bytes = good;
  bytes[33] ^= 0x40;
  expect_open_fails(bytes, "checksum mismatch");
}

TEST_F(CorruptShard, TruncatedTokens) {
  expect_open_fails(good.substr(0, good.size() - 1), "truncated");
}

TEST_F(CorruptShard, TruncatedHeader) {
  expect_open_fails(good.substr(0, 40), "truncated");
  expect_open_fails("", "truncated");
}

TEST_F(CorruptShard, TrailingBytes) { expect_open_fails(good + "xy", "trailing bytes"); }

TEST_F(CorruptShard, BadMagic) {
  std::string bytes = good;
  bytes[0] = 'X';
  expect_open_fails(bytes, "bad magic");
}

TEST_F(CorruptShard, WrongVersion) {
  std::string bytes = good;
  bytes[8] = 2;
  expect_open_fails(bytes, "version 2");
}

TEST_F(CorruptShard, UnknownDtype) {
  std::string bytes = good;
  bytes[12] = 7;
  expect_open_fails(bytes, "dtype 7");
}

TEST_F(CorruptShard, TokenOutsideVocabWithValidChecksum) {
  // A foreign writer could produce a consistent file with out-of-range ids;
  // lower the header's vocab_size below the largest token (297).
  std::string bytes = good;
  const uint64_t vocab = 200;
  std::memcpy(&bytes[16], &vocab, 8);
  expect_open_fails(bytes, "token 201 at index 67 is outside [0, 200)");
}

TEST_F(CorruptShard, MissingFile) {
  const std::string missing = dir.file("nope.tok");
  expect_error([&] { Shard s(missing); }, missing, "cannot open");
}

// ---- Dataset ----------------------------------------------------------------

// Shard s holds tokens s*10000 + i, so every token names its shard and
// position and window contents can be checked exactly.
void write_positional_shards(const TempDir &dir, const std::string &split,
                             const std::vector<uint64_t> &sizes, uint64_t vocab = 100000) {
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::vector<int32_t> tokens(sizes[s]);
    for (uint64_t i = 0; i < sizes[s]; ++i)
      tokens[i] = static_cast<int32_t>(s * 10000 + i);
    char name[64];
    std::snprintf(name, sizeof name, "%s_%05zu.tok", split.c_str(), s);
    write_shard(dir.file(name), tokens, vocab);
  }
}

// Brute force: every start position k*T whose window [k*T, k*T+T] fits.
std::vector<std::pair<size_t, uint64_t>> enumerate_windows(const std::vector<uint64_t> &sizes,
                                                           uint64_t T) {
  std::vector<std::pair<size_t, uint64_t>> windows;
  for (size_t s = 0; s < sizes.size(); ++s)
    for (uint64_t start = 0; start + T < sizes[s]; start += T)
      windows.emplace_back(s, start);
  return windows;
}

TEST(Dataset, WindowCountMatchesClosedFormAndEnumeration) {
  TempDir dir;
  const std::vector<uint64_t> sizes = {1, 0, 17, 33, 100, 9, 8};
  write_positional_shards(dir, "train", sizes);
  for (uint64_t T : {1, 2, 7, 8, 16, 32, 99}) {
    uint64_t closed_form = 0;
    for (uint64_t n : sizes)
      closed_form += n ? (n - 1) / T : 0;
    Dataset data(dir.str(), "train", static_cast<int64_t>(T), 100000, 1, true);
    EXPECT_EQ(data.num_windows(), closed_form) << "T=" << T;
    EXPECT_EQ(data.num_windows(), enumerate_windows(sizes, T).size()) << "T=" << T;
  }
}

TEST(Dataset, UnshuffledWindowsFollowShardOrderWithTargetsShifted) {
  TempDir dir;
  const std::vector<uint64_t> sizes = {17, 3, 26};
  write_positional_shards(dir, "train", sizes);
  const int64_t T = 8;
  Dataset data(dir.str(), "train", T, 100000, 42, /*shuffle=*/false);
  const auto expected = enumerate_windows(sizes, T);
  ASSERT_EQ(data.num_windows(), expected.size());
  std::vector<int32_t> tokens(T), targets(T);
  for (size_t w = 0; w < expected.size(); ++w) {
    data.window(5, w, tokens.data(), targets.data());
    const auto [s, start] = expected[w];
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(tokens[t], static_cast<int32_t>(s * 10000 + start + t)) << w << "," << t;
      EXPECT_EQ(targets[t], static_cast<int32_t>(s * 10000 + start + t + 1)) << w << "," << t;
    }
  }
}

TEST(Dataset, ShuffledEpochVisitsEveryWindowOnceWithTargetsShifted) {
  TempDir dir;
  const std::vector<uint64_t> sizes = {301, 64, 129};
  write_positional_shards(dir, "train", sizes);
  const int64_t T = 16;
  Dataset data(dir.str(), "train", T, 100000, 7, true);
  std::set<int32_t> expected_firsts;
  for (const auto &[s, start] : enumerate_windows(sizes, T))
    expected_firsts.insert(static_cast<int32_t>(s * 10000 + start));

  std::vector<int32_t> tokens(T), targets(T);
  std::multiset<int32_t> seen;
  std::vector<int32_t> order;
  for (uint64_t i = 0; i < data.num_windows(); ++i) {
    data.window(0, i, tokens.data(), targets.data());
    seen.insert(tokens[0]);
    order.push_back(tokens[0]);
    for (int64_t t = 0; t < T; ++t)
      ASSERT_EQ(targets[t], tokens[t] + 1); // consecutive tokens within one shard
  }
  EXPECT_EQ(std::set<int32_t>(seen.begin(), seen.end()), expected_firsts);
  EXPECT_EQ(seen.size(), expected_firsts.size());
  EXPECT_FALSE(std::is_sorted(order.begin(), order.end())) << "epoch order was not shuffled";
}

std::vector<int32_t> draw(Dataset &data, int64_t batch, int64_t T, int steps) {
  std::vector<int32_t> all, tokens(batch * T), targets(batch * T);
  for (int i = 0; i < steps; ++i) {
    data.next_batch(batch, tokens.data(), targets.data());
    all.insert(all.end(), tokens.begin(), tokens.end());
    for (int64_t j = 0; j < batch * T; ++j)
      EXPECT_EQ(targets[j], tokens[j] + 1);
  }
  return all;
}

TEST(Dataset, DeterministicAcrossInstancesAndResumable) {
  TempDir dir;
  write_positional_shards(dir, "train", {200, 150, 90});
  const int64_t T = 8, B = 3;
  Dataset a(dir.str(), "train", T, 100000, 1234, true);
  Dataset b(dir.str(), "train", T, 100000, 1234, true);
  const uint64_t n = a.num_windows(); // 24 + 18 + 11 = 53
  ASSERT_EQ(n, 53u);
  // 40 steps of 3 windows cross two epoch boundaries.
  const auto seq_a = draw(a, B, T, 40);
  EXPECT_EQ(seq_a, draw(b, B, T, 40));
  EXPECT_EQ(a.position().epoch, 120 / n);
  EXPECT_EQ(a.position().index, 120 % n);

  // Resume from a mid-run position in a fresh instance.
  Dataset c(dir.str(), "train", T, 100000, 1234, true);
  c.set_position({0, 10 * B});
  const auto tail = draw(c, B, T, 30);
  EXPECT_EQ(tail, std::vector<int32_t>(seq_a.begin() + 10 * B * T, seq_a.end()));

  // A different seed gives a different order.
  Dataset d(dir.str(), "train", T, 100000, 1235, true);
  EXPECT_NE(draw(d, B, T, 10), std::vector<int32_t>(seq_a.begin(), seq_a.begin() + 10 * B * T));
}

TEST(Dataset, EpochsUseDifferentPermutations) {
  TempDir dir;
  write_positional_shards(dir, "train", {1000});
  const int64_t T = 4;
  Dataset data(dir.str(), "train", T, 100000, 99, true);
  std::vector<int32_t> tokens(T), targets(T);
  auto epoch_order = [&](uint64_t epoch) {
    std::vector<int32_t> firsts;
    for (uint64_t i = 0; i < data.num_windows(); ++i) {
      data.window(epoch, i, tokens.data(), targets.data());
      firsts.push_back(tokens[0]);
    }
    return firsts;
  };
  const auto e0 = epoch_order(0), e1 = epoch_order(1), e0_again = epoch_order(0);
  EXPECT_NE(e0, e1);
  EXPECT_EQ(e0, e0_again); // window() is a pure function of (epoch, index)
  auto s0 = e0, s1 = e1;
  std::sort(s0.begin(), s0.end());
  std::sort(s1.begin(), s1.end());
  EXPECT_EQ(s0, s1);
}

TEST(Dataset, UnshuffledNextBatchWrapsIntoNextEpoch) {
  TempDir dir;
  write_positional_shards(dir, "train", {9}); // T=4: windows at 0 and 4
  Dataset data(dir.str(), "train", 4, 100000, 0, false);
  ASSERT_EQ(data.num_windows(), 2u);
  std::vector<int32_t> tokens(3 * 4), targets(3 * 4);
  data.next_batch(3, tokens.data(), targets.data());
  EXPECT_EQ(tokens, (std::vector<int32_t>{0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3}));
  EXPECT_EQ(targets, (std::vector<int32_t>{1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4}));
  EXPECT_EQ(data.position().epoch, 1u);
  EXPECT_EQ(data.position().index, 1u);
}

// A data-parallel rank's part of a batch: the rows the whole batch has at
// those places, and the position moves past the whole batch.
TEST(Dataset, BatchSliceEqualsRowsOfTheWholeBatch) {
  TempDir dir;
  write_positional_shards(dir, "train", {203});
  Dataset whole(dir.str(), "train", 4, 100000, 7, true);
  Dataset part(dir.str(), "train", 4, 100000, 7, true);
  const int64_t batch = 6, seq = 4;
  std::vector<int32_t> tokens(batch * seq), targets(batch * seq);
  for (int step = 0; step < 20; ++step) { // crosses epochs (50 windows)
    whole.next_batch(batch, tokens.data(), targets.data());
    const int64_t first = step % 5, count = std::min<int64_t>(2, batch - first);
    std::vector<int32_t> t(count * seq), g(count * seq);
    part.next_batch(batch, first, count, t.data(), g.data());
    EXPECT_EQ(t, std::vector<int32_t>(tokens.begin() + first * seq,
                                      tokens.begin() + (first + count) * seq));
    EXPECT_EQ(g, std::vector<int32_t>(targets.begin() + first * seq,
                                      targets.begin() + (first + count) * seq));
    EXPECT_EQ(part.position().epoch, whole.position().epoch);
    EXPECT_EQ(part.position().index, whole.position().index);
  }
  expect_error([&] { part.next_batch(4, 3, 2, tokens.data(), targets.data()); },
               dir.str(), "sequences [3, 5) are not in a batch of 4");
}

TEST(Dataset, SplitsAreSeparate) {
  TempDir dir;
  write_positional_shards(dir, "train", {100});
  write_positional_shards(dir, "val", {20, 20});
  Dataset val(dir.str(), "val", 4, 100000, 0, false);
  EXPECT_EQ(val.num_windows(), 4u + 4u);
  Dataset train(dir.str(), "train", 4, 100000, 0, false);
  EXPECT_EQ(train.num_windows(), 24u);
}

TEST(Dataset, Errors) {
  TempDir dir;
  expect_error([&] { Dataset d(dir.str(), "train", 4, 100, 0, true); }, dir.str(),
               "no train_*.tok shards");
  const std::string missing = dir.file("missing");
  expect_error([&] { Dataset d(missing, "train", 4, 100, 0, true); }, missing,
               "cannot list directory");

  write_positional_shards(dir, "train", {3}, 1000);
  expect_error([&] { Dataset d(dir.str(), "train", 4, 1000, 0, true); }, dir.str(),
               "not one window");
  expect_error([&] { Dataset d(dir.str(), "train", 0, 1000, 0, true); }, dir.str(),
               "seq_len must be >= 1");

  write_positional_shards(dir, "train", {50}, 1000);
  const std::string shard = dir.file("train_00000.tok");
  expect_error([&] { Dataset d(dir.str(), "train", 4, 999, 0, true); }, shard,
               "shard vocab_size 1000 exceeds the model's vocab_size 999");

  Dataset ok(dir.str(), "train", 4, 1000, 0, true);
  EXPECT_THROW(ok.set_position({0, ok.num_windows()}), std::runtime_error);
  std::vector<int32_t> tokens(4), targets(4);
  EXPECT_THROW(ok.window(0, ok.num_windows(), tokens.data(), targets.data()), std::out_of_range);

  // A corrupt shard names itself, not just the directory.
  std::string bytes = read_bytes(shard);
  bytes[70] ^= 0x10;
  write_bytes(shard, bytes);
  expect_error([&] { Dataset d(dir.str(), "train", 4, 1000, 0, true); }, shard,
               "checksum mismatch");
}

// ---- shuffle.h ----------------------------------------------------------------

TEST(Shuffle, Splitmix64ReferenceOutputs) {
  uint64_t state = 0;
  EXPECT_EQ(llamart::data::splitmix64(state), 0xe220a8397b1dcdafull);
  EXPECT_EQ(llamart::data::splitmix64(state), 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(llamart::data::splitmix64(state), 0x06c45d188009454full);
}

TEST(Shuffle, BelowIsInRangeAndUniform) {
  llamart::data::Xoshiro256 rng(5, 0);
  std::vector<int> counts(3);
  const int draws = 30000;
  for (int i = 0; i < draws; ++i) {
    const uint64_t v = rng.below(3);
    ASSERT_LT(v, 3u);
    ++counts[v];
  }
  // Binomial sd = sqrt(n p (1-p)) ~ 82; allow 5 sd.
  for (int c : counts)
    EXPECT_NEAR(c, draws / 3, 410);
  EXPECT_EQ(rng.below(1), 0u);
}

TEST(Shuffle, FisherYatesIsUniformOverPermutations) {
  // Every one of the 24 permutations of 4 items must be about equally likely
  // (a classic off-by-one yields only the 6 cyclic ones, or a biased mix).
  std::map<std::vector<uint32_t>, int> counts;
  const int epochs = 24000;
  std::vector<uint32_t> perm;
  for (int e = 0; e < epochs; ++e) {
    llamart::data::epoch_permutation(17, static_cast<uint64_t>(e), 4, perm);
    ++counts[perm];
  }
  ASSERT_EQ(counts.size(), 24u);
  double chi2 = 0;
  for (const auto &[p, c] : counts)
    chi2 += (c - 1000.0) * (c - 1000.0) / 1000.0;
  // 23 degrees of freedom: P(chi2 > 60) < 1e-4.
  EXPECT_LT(chi2, 60.0);
}

} // namespace
