// safetensors I/O and the half-precision conversions (runtime/checkpoint).
//
// Files are checked both through the round trip and against byte strings
// assembled here by hand from the format specification (8-byte LE header
// length, JSON header, raw buffer), which is what a file written by the
// Hugging Face library contains. Conversions are checked exhaustively
// against the IEEE formulas evaluated with ldexp.
#include "runtime/checkpoint/fs_util.h"
#include "runtime/checkpoint/half.h"
#include "runtime/checkpoint/safetensors.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>

namespace fs = std::filesystem;
using namespace llamart::ckpt;

namespace {

class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "safetensors_test.XXXXXX").string();
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

template <typename T> std::string raw(std::initializer_list<T> values) {
  std::string s;
  for (T v : values)
    s.append(reinterpret_cast<const char *>(&v), sizeof v);
  return s;
}

// A file per the spec: u64 LE header length, header, buffer.
std::string st_file(const std::string &header, const std::string &buffer) {
  const uint64_t n = header.size();
  return std::string(reinterpret_cast<const char *>(&n), 8) + header + buffer;
}

Tensor make(StDType dtype, std::vector<int64_t> shape, const std::string &bytes) {
  Tensor t;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.data.assign(bytes.begin(), bytes.end());
  return t;
}

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

// ---- conversions ---------------------------------------------------------------

double f16_reference(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  const double s = sign ? -1.0 : 1.0;
  if (exponent == 0x1f)
    return mantissa ? std::numeric_limits<double>::quiet_NaN()
                    : s * std::numeric_limits<double>::infinity();
  if (exponent == 0)
    return s * std::ldexp(mantissa, -24);
  return s * std::ldexp(1024 + mantissa, exponent - 25);
}

double bf16_reference(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 7) & 0xff, mantissa = h & 0x7f;
  const double s = sign ? -1.0 : 1.0;
  if (exponent == 0xff)
    return mantissa ? std::numeric_limits<double>::quiet_NaN()
                    : s * std::numeric_limits<double>::infinity();
  if (exponent == 0)
    return s * std::ldexp(mantissa, -133);
  return s * std::ldexp(128 + mantissa, exponent - 134);
}

TEST(Half, F16ToFloatExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = f16_reference(static_cast<uint16_t>(h));
    const float got = f16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(ref)) {
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
    } else {
      ASSERT_EQ(static_cast<double>(got), ref) << std::hex << h;
      ASSERT_EQ(std::signbit(got), bool(h & 0x8000)) << std::hex << h;
    }
  }
}

TEST(Half, Bf16ToFloatExhaustive) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const double ref = bf16_reference(static_cast<uint16_t>(h));
    const float got = bf16_to_float(static_cast<uint16_t>(h));
    if (std::isnan(ref))
      EXPECT_TRUE(std::isnan(got)) << std::hex << h;
    else
      ASSERT_EQ(static_cast<double>(got), ref) << std::hex << h;
  }
}

TEST(Half, KnownValues) {
  EXPECT_EQ(f16_to_float(0x3c00), 1.0f);
  EXPECT_EQ(f16_to_float(0xc000), -2.0f);
  EXPECT_EQ(f16_to_float(0x7bff), 65504.0f);
  EXPECT_EQ(f16_to_float(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(f16_to_float(0x3555), 0.333251953125f);
  EXPECT_EQ(bf16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(bf16_to_float(0x4049), 3.140625f);
  EXPECT_EQ(bf16_to_float(0xc000), -2.0f);
  EXPECT_TRUE(std::isinf(bf16_to_float(0x7f80)));
}

TEST(Half, FloatToHalfRoundTripsAndRoundsToNearestEven) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto b = static_cast<uint16_t>(h);
    if (!std::isnan(f16_to_float(b)))
      ASSERT_EQ(float_to_f16(f16_to_float(b)), b) << std::hex << h;
    else
      ASSERT_TRUE(std::isnan(f16_to_float(float_to_f16(f16_to_float(b)))));
    if (!std::isnan(bf16_to_float(b)))
      ASSERT_EQ(float_to_bf16(bf16_to_float(b)), b) << std::hex << h;
    else
      ASSERT_TRUE(std::isnan(bf16_to_float(float_to_bf16(bf16_to_float(b)))));
  }
  // Exact ties go to the even neighbour; anything above a tie rounds up.
  EXPECT_EQ(float_to_f16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);
  EXPECT_EQ(float_to_f16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);
  EXPECT_EQ(float_to_f16(65519.0f), 0x7bff);
  EXPECT_EQ(float_to_f16(65520.0f), 0x7c00);
  EXPECT_EQ(float_to_f16(std::ldexp(1.0f, -25)), 0x0000);
  EXPECT_EQ(float_to_f16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3f80);
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3f82);
  EXPECT_EQ(float_to_bf16(-0.0f), 0x8000);
}

// ---- Tensor ----------------------------------------------------------------------

TEST(Tensor, ToF64ConvertsEveryFloatDtype) {
  const float f32[] = {1.5f, -2.25f, 1e-3f};
  EXPECT_EQ(Tensor::from_f32({3}, f32).to_f64(), (std::vector<double>{1.5, -2.25, double(1e-3f)}));
  const double f64[] = {0.1, -1e300};
  EXPECT_EQ(Tensor::from_f64({2}, f64).to_f64(), (std::vector<double>{0.1, -1e300}));
  EXPECT_EQ(make(StDType::F16, {3}, raw<uint16_t>({0x3c00, 0xc000, 0x0001})).to_f64(),
            (std::vector<double>{1.0, -2.0, std::ldexp(1.0, -24)}));
  EXPECT_EQ(make(StDType::BF16, {2, 1}, raw<uint16_t>({0x4049, 0xbf80})).to_f64(),
            (std::vector<double>{3.140625, -1.0}));
  const int32_t i32[] = {1, 2};
  const Tensor ints = Tensor::from_i32({2}, i32);
  EXPECT_EQ(ints.data.size(), 8u);
  EXPECT_THROW(ints.to_f64(), std::runtime_error);
  EXPECT_THROW(make(StDType::F32, {2}, raw<float>({1.0f})).to_f64(), std::runtime_error);
  EXPECT_EQ(make(StDType::F32, {}, raw<float>({4.0f})).numel(), 1);
  EXPECT_EQ(make(StDType::F32, {3, 0}, "").numel(), 0);
}

// ---- files -----------------------------------------------------------------------

File sample_file() {
  File f;
  const float w[] = {1, 2, 3, 4, 5, 6};
  f.tensors["model.layers.0.mlp.up_proj.weight"] = Tensor::from_f32({2, 3}, w);
  const double d[] = {0.5, -0.25};
  f.tensors["b.f64"] = Tensor::from_f64({2}, d);
  f.tensors["c.f16"] = make(StDType::F16, {3}, raw<uint16_t>({0x3c00, 0x7bff, 0x8001}));
  f.tensors["d.bf16"] = make(StDType::BF16, {1, 1}, raw<uint16_t>({0x4049}));
  const int32_t i[] = {-7, 2147483647};
  f.tensors["e.i32"] = Tensor::from_i32({2}, i);
  f.tensors["f.i64"] = make(StDType::I64, {1}, raw<int64_t>({-(int64_t(1) << 40)}));
  f.tensors["g.scalar"] = make(StDType::F32, {}, raw<float>({42.0f}));
  f.tensors["h.empty"] = make(StDType::F32, {0, 4}, "");
  f.metadata["format"] = "pt";
  f.metadata["step"] = "100";
  return f;
}

TEST(Safetensors, RoundTripAllDtypes) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const File in = sample_file();
  write_safetensors(path, in);
  const File out = read_safetensors(path);
  EXPECT_EQ(out.metadata, in.metadata);
  ASSERT_EQ(out.tensors.size(), in.tensors.size());
  for (const auto &[name, t] : in.tensors) {
    ASSERT_TRUE(out.tensors.count(name)) << name;
    const Tensor &r = out.tensors.at(name);
    EXPECT_EQ(r.dtype, t.dtype) << name;
    EXPECT_EQ(r.shape, t.shape) << name;
    EXPECT_EQ(r.data, t.data) << name;
  }
  EXPECT_EQ(out.tensors.at("c.f16").to_f64(),
            (std::vector<double>{1.0, 65504.0, -std::ldexp(1.0, -24)}));
  // No temporary file is left next to the result.
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 1);
}

TEST(Safetensors, WriterLayoutFollowsSpec) {
  TempDir dir;
  const std::string path = dir.file("m.safetensors");
  write_safetensors(path, sample_file());
  const std::string bytes = read_bytes(path);
  uint64_t n;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u); // buffer starts 8-byte aligned
  const std::string header = bytes.substr(8, n);
  EXPECT_EQ(header.find_last_not_of(' '), header.find_last_of('}')); // space padding only
  const auto json = nlohmann::ordered_json::parse(header);
  EXPECT_EQ(json.begin().key(), "__metadata__");
  // Tensors appear in name order with contiguous offsets covering the buffer.
  uint64_t offset = 0;
  std::string prev;
  for (auto it = std::next(json.begin()); it != json.end(); ++it) {
    EXPECT_LT(prev, it.key());
    prev = it.key();
    EXPECT_EQ((*it)["data_offsets"][0].get<uint64_t>(), offset) << it.key();
    offset = (*it)["data_offsets"][1].get<uint64_t>();
  }
  EXPECT_EQ(8 + n + offset, bytes.size());
  EXPECT_EQ(json["e.i32"]["dtype"], "I32");
  EXPECT_EQ(json["model.layers.0.mlp.up_proj.weight"]["shape"].get<std::vector<int64_t>>(),
            (std::vector<int64_t>{2, 3}));

  // Equal inputs give byte-identical files; overwriting replaces atomically.
  write_safetensors(path, sample_file());
  EXPECT_EQ(read_bytes(path), bytes);
}

TEST(Safetensors, ReadsHandBuiltFile) {
  // Not in name order, extra whitespace, padding, a scalar, a hole-free buffer.
  TempDir dir;
  const std::string path = dir.file("hand.safetensors");
  const std::string header =
      R"({"weight": {"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},
          "__metadata__": {"format": "pt"},
          "bias": {"dtype":"BF16","shape":[2],"data_offsets":[16,20]},
          "step": {"data_offsets":[20,28],"dtype":"I64","shape":[]}}    )";
  const std::string buffer = raw<float>({1.0f, -2.0f, 0.5f, 8.0f}) +
                             raw<uint16_t>({0x3f80, 0xc040}) + raw<int64_t>({123456789012});
  write_bytes(path, st_file(header, buffer));
  const File f = read_safetensors(path);
  EXPECT_EQ(f.metadata.at("format"), "pt");
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors.at("weight").shape, (std::vector<int64_t>{2, 2}));
  EXPECT_EQ(f.tensors.at("weight").to_f64(), (std::vector<double>{1.0, -2.0, 0.5, 8.0}));
  EXPECT_EQ(f.tensors.at("bias").dtype, StDType::BF16);
  EXPECT_EQ(f.tensors.at("bias").to_f64(), (std::vector<double>{1.0, -3.0}));
  EXPECT_EQ(f.tensors.at("step").shape.size(), 0u);
  int64_t step;
  std::memcpy(&step, f.tensors.at("step").data.data(), 8);
  EXPECT_EQ(step, 123456789012);
}

class MalformedSafetensors : public ::testing::Test {
protected:
  void expect_read_fails(const std::string &bytes, const std::string &what) {
    write_bytes(path, bytes);
    expect_error([&] { read_safetensors(path); }, path, what);
  }
  TempDir dir;
  std::string path = dir.file("bad.safetensors");
  std::string buffer = raw<float>({1, 2, 3, 4});
};

TEST_F(MalformedSafetensors, ShorterThanLengthField) { expect_read_fails("abc", "truncated"); }

TEST_F(MalformedSafetensors, TruncatedBuffer) {
  const std::string good =
      st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", buffer);
  expect_read_fails(good.substr(0, good.size() - 3), "outside the 13-byte data buffer");
}

TEST_F(MalformedSafetensors, HeaderLengthPastEnd) {
  std::string bytes = st_file("{}", "");
  const uint64_t n = 1000;
  std::memcpy(bytes.data(), &n, 8);
  expect_read_fails(bytes, "header length 1000 exceeds the 2 bytes");
}

TEST_F(MalformedSafetensors, BadJson) {
  expect_read_fails(st_file(R"({"a": {"dtype": )", ""), "not valid JSON");
  expect_read_fails(st_file("[1,2]", ""), "not an object");
}

TEST_F(MalformedSafetensors, UnknownDtype) {
  expect_read_fails(st_file(R"({"a":{"dtype":"Q8","shape":[4],"data_offsets":[0,4]}})",
                            buffer),
                    "unsupported dtype \"Q8\"");
}

TEST_F(MalformedSafetensors, OffsetsOutOfRange) {
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})",
                            buffer),
                    "outside the 16-byte data buffer");
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})",
                            buffer),
                    "data_offsets [8, 4)");
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[-4,0]}})",
                            buffer),
                    "non-negative integer");
}

TEST_F(MalformedSafetensors, ShapeBytesMismatch) {
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,16]}})",
                            buffer),
                    "needs 12 bytes but data_offsets span 16");
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                            buffer),
                    "non-negative integer");
}

TEST_F(MalformedSafetensors, OverlappingTensors) {
  expect_read_fails(
      st_file(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,12]},)"
              R"("b":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
              buffer),
      "overlapping");
}

TEST_F(MalformedSafetensors, MissingFieldsAndBadMetadata) {
  expect_read_fails(st_file(R"({"a":{"dtype":"F32","shape":[4]}})", buffer),
                    "missing \"data_offsets\"");
  expect_read_fails(st_file(R"({"__metadata__":{"step":3}})", ""), "not a string");
}

TEST_F(MalformedSafetensors, MissingFile) {
  const std::string missing = dir.file("none.safetensors");
  expect_error([&] { read_safetensors(missing); }, missing, "cannot open");
}

TEST(Safetensors, WriterRejectsInconsistentTensor) {
  TempDir dir;
  const std::string path = dir.file("w.safetensors");
  File f;
  f.tensors["x"] = make(StDType::F32, {3}, raw<float>({1, 2}));
  expect_error([&] { write_safetensors(path, f); }, path, "8 data bytes");
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 0);
  const std::string nodir = dir.file("missing/w.safetensors");
  expect_error([&] { write_safetensors(nodir, sample_file()); }, nodir, "cannot create");
}

// ---- fs_util ---------------------------------------------------------------------

TEST(FsUtil, AtomicWriteReplacesContent) {
  TempDir dir;
  const std::string path = dir.file("state.json");
  atomic_write_file(path, "first version, longer");
  atomic_write_file(path, "second");
  EXPECT_EQ(read_bytes(path), "second");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 1);
}

TEST(FsUtil, AbandonedWriterLeavesNothing) {
  TempDir dir;
  const std::string path = dir.file("x.bin");
  {
    AtomicFileWriter w(path);
    w.write("partial", 7);
  } // destroyed without commit, as when an exception unwinds
  EXPECT_FALSE(fs::exists(path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.str()), fs::directory_iterator()), 0);
}

TEST(FsUtil, ParentDirAndFsyncDir) {
  EXPECT_EQ(parent_dir("a/b/c.bin"), "a/b");
  EXPECT_EQ(parent_dir("c.bin"), ".");
  EXPECT_EQ(parent_dir("/c.bin"), "/");
  TempDir dir;
  EXPECT_NO_THROW(fsync_dir(dir.str()));
  const std::string missing = dir.file("gone");
  expect_error([&] { fsync_dir(missing); }, missing, "cannot open directory");
}

} // namespace
