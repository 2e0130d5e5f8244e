// metrics.png and TensorBoard event files (runtime/observe/plot.h,
// png_writer.h, bitmap_font.h, tensorboard.h). Checksums against published
// vectors; compressed streams and PNG files decoded by Python's zlib (an
// independent inflate) and a PNG chunk parser; the plot checked by where its
// pixels are for series of known shape.
#include "runtime/observe/bitmap_font.h"
#include "runtime/observe/metrics.h"
#include "runtime/observe/plot.h"
#include "runtime/observe/png_writer.h"
#include "runtime/observe/tensorboard.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <unistd.h>

namespace llamart::observe {
namespace {

namespace fs = std::filesystem;

class TempDir {
public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "plot_test.XXXXXX").string();
    path_ = mkdtemp(tmpl.data());
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string &name) const { return (fs::path(path_) / name).string(); }
  const std::string &path() const { return path_; }

private:
  std::string path_;
};

void write_text(const std::string &path, const std::string &text) {
  std::ofstream(path, std::ios::binary) << text;
}

std::string read_bytes(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Runs /usr/bin/python3 on `script` with `arg`, returns its stdout.
std::string python(const std::string &script, const std::string &arg) {
  TempDir d;
  write_text(d / "s.py", script);
  const std::string cmd = "/usr/bin/python3 " + (d / "s.py") + " " + arg + " > " + (d / "out");
  EXPECT_EQ(std::system(cmd.c_str()), 0) << cmd;
  return read_bytes(d / "out");
}

TEST(Checksums, Crc32Vectors) {
  EXPECT_EQ(crc32(0, "123456789", 9), 0xCBF43926u);
  EXPECT_EQ(crc32(0, "", 0), 0u);
  // Continuing a CRC equals one pass over the concatenation.
  EXPECT_EQ(crc32(crc32(0, "1234", 4), "56789", 5), 0xCBF43926u);
  EXPECT_EQ(crc32(0, "IEND", 4), 0xAE426082u); // every PNG's last chunk CRC
}

TEST(Checksums, Adler32Vectors) {
  EXPECT_EQ(adler32("Wikipedia", 9), 0x11E60398u);
  EXPECT_EQ(adler32("", 0), 1u);
  // Past the 5552-byte block the sums are reduced in: 1 + 255*n and the
  // closed form of b, mod 65521.
  const std::string ff(100000, '\xff');
  uint64_t a = 1, b = 0;
  for (size_t i = 0; i < ff.size(); ++i) {
    a = (a + 255) % 65521;
    b = (b + a) % 65521;
  }
  EXPECT_EQ(adler32(ff.data(), ff.size()), static_cast<uint32_t>(b << 16 | a));
}

TEST(Checksums, Crc32cVectors) {
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  // RFC 3720 appendix B.4.
  const std::string zeros(32, '\0'), ones(32, '\xff');
  EXPECT_EQ(crc32c(zeros.data(), zeros.size()), 0x8A9136AAu);
  EXPECT_EQ(crc32c(ones.data(), ones.size()), 0x62A8AB43u);
  // ror(0xE3069283, 15) + 0xA282EAD8 mod 2^32.
  EXPECT_EQ(masked_crc32c("123456789", 9), 0xC78AB0E5u);
}

TEST(Protobuf, Varints) {
  auto enc = [](uint64_t v) {
    std::string s;
    append_varint(s, v);
    return s;
  };
  EXPECT_EQ(enc(0), std::string("\x00", 1));
  EXPECT_EQ(enc(1), "\x01");
  EXPECT_EQ(enc(127), "\x7f");
  EXPECT_EQ(enc(128), "\x80\x01");
  EXPECT_EQ(enc(300), "\xac\x02"); // the protobuf documentation's example
  EXPECT_EQ(enc(UINT64_MAX), "\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01");
  // A negative int64 step is its two's complement: 10 bytes.
  EXPECT_EQ(enc(static_cast<uint64_t>(int64_t{-1})).size(), 10u);
}

TEST(TensorBoard, RecordFraming) {
  const std::string data = "hello event";
  const std::string r = tfrecord(data);
  ASSERT_EQ(r.size(), 8 + 4 + data.size() + 4);
  uint64_t len = 0;
  for (int i = 7; i >= 0; --i)
    len = len << 8 | static_cast<uint8_t>(r[i]);
  EXPECT_EQ(len, data.size());
  auto u32 = [&](size_t at) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; --i)
      v = v << 8 | static_cast<uint8_t>(r[at + i]);
    return v;
  };
  EXPECT_EQ(u32(8), masked_crc32c(r.data(), 8));
  EXPECT_EQ(r.substr(12, data.size()), data);
  EXPECT_EQ(u32(12 + data.size()), masked_crc32c(data.data(), data.size()));
}

TEST(TensorBoard, EventBytes) {
  // Hand-assembled Event{wall_time: 1.5, step: 300, summary {value {tag:
  // "a", simple_value: 2.0}}}.
  const std::string expect = std::string("\x09\x00\x00\x00\x00\x00\x00\xf8\x3f", 9) + // 1: double 1.5
                             "\x10\xac\x02" +                                          // 2: varint 300
                             std::string("\x2a\x0a\x0a\x08\x0a\x01" "a" "\x15\x00\x00\x00\x40", 12);
  EXPECT_EQ(event_scalars(1.5, 300, {{"a", 2.0f}}), expect);
  const std::string version = event_file_version(1.5);
  EXPECT_EQ(version.substr(9), std::string("\x1a\x0d") + "brain.Event:2");
}

// The writer's file read back by a Python TFRecord + protobuf reader that
// checks both CRCs of every record.
const char *kEventReader = R"PY(
import glob, struct, sys
def crc32c(b):
    c = 0xffffffff
    for x in b:
        c ^= x
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    return c ^ 0xffffffff
def masked(b):
    c = crc32c(b)
    return (((c >> 15) | (c << 17)) + 0xa282ead8) & 0xffffffff
def varint(b, i):
    v = s = 0
    while True:
        x = b[i]; i += 1; v |= (x & 0x7f) << s; s += 7
        if x < 0x80: return v, i
def fields(b):
    i = 0
    while i < len(b):
        key, i = varint(b, i); f, w = key >> 3, key & 7
        if w == 0: v, i = varint(b, i)
        elif w == 1: v = b[i:i+8]; i += 8
        elif w == 5: v = b[i:i+4]; i += 4
        elif w == 2:
            n, i = varint(b, i); v = b[i:i+n]; i += n
        else: raise SystemExit("wire type %d" % w)
        yield f, v
(path,) = glob.glob(sys.argv[1] + "/events.out.tfevents.*")
b = open(path, "rb").read(); i = 0
while i < len(b):
    hdr = b[i:i+8]; (n,) = struct.unpack("<Q", hdr)
    assert struct.unpack("<I", b[i+8:i+12])[0] == masked(hdr), "length crc"
    data = b[i+12:i+12+n]
    assert struct.unpack("<I", b[i+12+n:i+16+n])[0] == masked(data), "data crc"
    i += 16 + n
    step = 0; out = []
    for f, v in fields(data):
        if f == 2: step = v
        elif f == 3: out.append("version " + v.decode())
        elif f == 5:
            for _, val in fields(v):
                d = dict(fields(val))
                out.append("%s %d %08x" % (d[1].decode(), step, struct.unpack("<I", d[2])[0]))
    print("\n".join(out))
)PY";

TEST(TensorBoard, MetricsLogWritesEvents) {
  TempDir d;
  {
    MetricsLog log(d / "metrics.jsonl", d / "tb");
    log.log_step(1, 2.5, 3e-4, 0.75, 1000.0, 1.0);
    log.log_step(2, 2.25, 1.5e-4, 0.5, 1250.0, 2.0);
    log.log_eval(2, 2.125);
  }
  const std::string got = python(kEventReader, d / "tb");
  // Each value is the float32 nearest the logged double, bit for bit.
  auto f32 = [](double v) {
    const float f = static_cast<float>(v);
    uint32_t bits;
    std::memcpy(&bits, &f, sizeof bits);
    char buf[16];
    std::snprintf(buf, sizeof buf, "%08x", bits);
    return std::string(buf);
  };
  EXPECT_EQ(got, "version brain.Event:2\n"
                 "train/loss 1 " + f32(2.5) + "\ntrain/lr 1 " + f32(3e-4) +
                 "\ntrain/grad_norm 1 " + f32(0.75) + "\ntrain/tokens_per_s 1 " + f32(1000) +
                 "\ntrain/loss 2 " + f32(2.25) + "\ntrain/lr 2 " + f32(1.5e-4) +
                 "\ntrain/grad_norm 2 " + f32(0.5) + "\ntrain/tokens_per_s 2 " + f32(1250) +
                 "\nval/loss 2 " + f32(2.125) + "\n");
  EXPECT_EQ(f32(2.5), "40200000"); // the encoding the reader sees: IEEE single
}

const char *kInflate = R"PY(
import sys, zlib
sys.stdout.buffer.write(zlib.decompress(open(sys.argv[1], "rb").read()).hex().encode())
)PY";

std::string hex(const std::vector<uint8_t> &v) {
  static const char *d = "0123456789abcdef";
  std::string s;
  for (uint8_t b : v)
    s += d[b >> 4], s += d[b & 15];
  return s;
}

TEST(Deflate, PythonZlibInflatesIt) {
  std::mt19937 rng(7);
  std::vector<std::vector<uint8_t>> inputs;
  inputs.push_back({});                         // empty
  inputs.push_back({42});                       // one literal
  inputs.push_back(std::vector<uint8_t>(1000, 0)); // long run: matches of 258 and a tail
  std::vector<uint8_t> rnd(5000);
  for (auto &b : rnd)
    b = static_cast<uint8_t>(rng()); // every literal, 8- and 9-bit codes
  inputs.push_back(rnd);
  std::vector<uint8_t> rows; // repeated rows with a changing column: distance-stride matches
  for (int y = 0; y < 300; ++y)
    for (int x = 0; x < 1001; ++x)
      rows.push_back(static_cast<uint8_t>(x == y % 1001 ? 3 : (x % 97 == 0 ? 1 : 0)));
  inputs.push_back(rows);
  for (size_t lengths = 3; lengths <= 260; ++lengths) // every match length code
    for (size_t i = 0; i < lengths; ++i)
      inputs.back().push_back(static_cast<uint8_t>(lengths));
  TempDir d;
  for (const auto &in : inputs) {
    write_text(d / "z", zlib_fixed(in.data(), in.size(), 1001));
    EXPECT_EQ(python(kInflate, d / "z"), hex(in)) << "input of " << in.size() << " bytes";
  }
  // The plot compresses: a mostly blank image is far below its raw size.
  EXPECT_LT(zlib_fixed(rows.data(), rows.size(), 1001).size(), rows.size() / 20);
}

// A PNG decoder: signature, chunk CRCs, IHDR, PLTE, IDAT via zlib, filter 0;
// prints "W H" then the palette and the pixel indices as hex.
const char *kPngDecoder = R"PY(
import struct, sys, zlib
b = open(sys.argv[1], "rb").read()
assert b[:8] == b"\x89PNG\r\n\x1a\n", "signature"
i = 8; chunks = []
while i < len(b):
    (n,) = struct.unpack(">I", b[i:i+4]); t = b[i+4:i+8]; data = b[i+8:i+8+n]
    (crc,) = struct.unpack(">I", b[i+8+n:i+12+n])
    assert crc == zlib.crc32(t + data), "crc of " + t.decode()
    chunks.append((t, data)); i += 12 + n
assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND", "chunk order"
w, h, depth, ctype, comp, filt, inter = struct.unpack(">IIBBBBB", chunks[0][1])
assert (depth, ctype, comp, filt, inter) == (8, 3, 0, 0, 0), "IHDR fields"
plte = b"".join(d for t, d in chunks if t == b"PLTE")
raw = zlib.decompress(b"".join(d for t, d in chunks if t == b"IDAT"))
assert len(raw) == h * (w + 1), "raw size"
pix = bytearray()
for y in range(h):
    assert raw[y * (w + 1)] == 0, "filter"
    pix += raw[y * (w + 1) + 1:(y + 1) * (w + 1)]
print(w, h, plte.hex(), pix.hex())
)PY";

TEST(Png, IndependentDecoderReadsIt) {
  IndexedImage img;
  img.width = 37;
  img.height = 11;
  img.palette = {{255, 255, 255}, {1, 2, 3}, {200, 100, 50}};
  for (int y = 0; y < img.height; ++y)
    for (int x = 0; x < img.width; ++x)
      img.pixels.push_back(static_cast<uint8_t>((x * y + x / 5) % 3));
  TempDir d;
  write_text(d / "a.png", encode_png(img));
  EXPECT_EQ(python(kPngDecoder, d / "a.png"),
            "37 11 ffffff010203c86432 " + hex(img.pixels) + "\n");
}

TEST(Png, RejectsBadImages) {
  IndexedImage img;
  img.width = 2;
  img.height = 1;
  img.palette = {{0, 0, 0}};
  img.pixels = {0, 1};
  EXPECT_THROW(encode_png(img), std::invalid_argument); // index past palette
  img.pixels = {0};
  EXPECT_THROW(encode_png(img), std::invalid_argument); // wrong count
}

TEST(Font, GlyphsAreDistinctAndSized) {
  // A copy-paste slip in the table shows up as two characters drawn alike.
  std::set<std::vector<bool>> seen;
  for (char c = ' '; c <= '_'; ++c) {
    std::vector<bool> bits;
    for (int y = 0; y < kGlyphHeight; ++y)
      for (int x = 0; x < kGlyphWidth; ++x)
        bits.push_back(glyph_pixel(c, x, y));
    EXPECT_TRUE(seen.insert(bits).second) << "glyph of '" << c << "' repeats another";
  }
  EXPECT_EQ(text_width("1e-4"), 4 * 6 - 1);
  EXPECT_TRUE(glyph_pixel('l', 0, 6));  // lowercase draws as 'L': its foot
  EXPECT_FALSE(glyph_pixel('1', 0, 0)); // '1' leaves its first column blank at the top
  EXPECT_TRUE(glyph_pixel('1', 2, 0));  // and has its stem in the middle
  EXPECT_FALSE(glyph_pixel('1', 7, 0)); // out of the cell
}

TEST(MetricsReader, ParsesRecordsKeepingTheLastOfAStep) {
  TempDir d;
  write_text(d / "m.jsonl",
             R"({"step":1,"loss":3.0,"lr":0.001,"grad_norm":1.0,"tokens_per_s":5,"elapsed_s":1}
{"step":2,"loss":null,"lr":0.001,"grad_norm":null,"tokens_per_s":5,"elapsed_s":2}
{"step":2,"skipped":"nonfinite","loss":null,"grad_norm":null,"lr":0.001}
{"step":3,"loss":2.0,"lr":0.002,"grad_norm":0.5,"tokens_per_s":5,"elapsed_s":3}
{"step":3,"val_loss":2.5}
{"step":3,"rollback_to":1,"checkpoint":"c"}
{"step":2,"loss":2.75,"lr":0.001,"grad_norm":0.8,"tokens_per_s":5,"elapsed_s":4}
{"step":9,"future_record_kind":1}

{"step":4,"loss":1.5,"lr")");
  const MetricsHistory h = read_metrics(d / "m.jsonl");
  ASSERT_EQ(h.updates.size(), 3u); // the half-written last line is left out
  EXPECT_EQ(h.updates[1].step, 2);
  EXPECT_EQ(h.updates[1].loss, 2.75); // redone after the rollback
  EXPECT_EQ(h.updates[2].lr, 0.002);
  ASSERT_EQ(h.evals.size(), 1u);
  EXPECT_EQ(h.evals[0], std::make_pair(int64_t{3}, 2.5));
  EXPECT_EQ(h.skipped, std::vector<int64_t>{2});
  EXPECT_EQ(h.rollbacks, std::vector<int64_t>{3});
  EXPECT_EQ(h.nonfinite, 0); // the nulls of step 2 were superseded
}

std::string error_of(const std::string &path) {
  try {
    read_metrics(path);
  } catch (const std::runtime_error &e) {
    return e.what();
  }
  return "no error";
}

TEST(MetricsReader, ErrorsNameFileAndLine) {
  TempDir d;
  write_text(d / "empty.jsonl", "");
  EXPECT_EQ(error_of(d / "empty.jsonl"), d / "empty.jsonl" + ": no update, eval or skip record to plot yet");
  write_text(d / "bad.jsonl", "{\"step\":1,\"val_loss\":2}\n\nnot json\n{\"step\":3,\"val_loss\":1}\n");
  EXPECT_EQ(error_of(d / "bad.jsonl"), d / "bad.jsonl" + ":3: not a JSON record");
  write_text(d / "nostep.jsonl", "{\"loss\":1,\"lr\":1,\"grad_norm\":1}\n");
  EXPECT_EQ(error_of(d / "nostep.jsonl"), d / "nostep.jsonl" + ":1: record has no integer \"step\"");
  write_text(d / "nolr.jsonl", "{\"step\":1,\"loss\":1,\"grad_norm\":1}\n");
  EXPECT_EQ(error_of(d / "nolr.jsonl"), d / "nolr.jsonl" + ":1: record has no \"lr\"");
  write_text(d / "str.jsonl", "[1]\n");
  EXPECT_EQ(error_of(d / "str.jsonl"), d / "str.jsonl" + ":1: not a JSON object");
  EXPECT_NE(error_of(d / "missing.jsonl").find(d / "missing.jsonl: cannot open"), std::string::npos);
}

// Panels are found by their frames: the black vertical runs of column x0.
struct Panel {
  int x0, x1, y0, y1;
};

std::vector<Panel> find_panels(const IndexedImage &img) {
  // The left frame edge is the first column with a long black run.
  std::vector<Panel> panels;
  for (int x = 0; x < img.width && panels.empty(); ++x) {
    int run = 0;
    for (int y = 0; y <= img.height; ++y) {
      const bool black = y < img.height && img.pixels[static_cast<size_t>(y) * img.width + x] == 1;
      if (black) {
        ++run;
        continue;
      }
      if (run > 100) {
        // The run may go on below the frame (an x tick at the left edge):
        // the bottom edge is the lowest row that continues to the right.
        auto at = [&](int xx, int yy) { return img.pixels[static_cast<size_t>(yy) * img.width + xx]; };
        int bottom = y - 1;
        while (bottom > y - run && !(at(x + 1, bottom) == 1 && at(x + 2, bottom) == 1))
          --bottom;
        int x1 = x;
        while (x1 + 1 < img.width && at(x1 + 1, bottom) == 1)
          ++x1;
        panels.push_back({x, x1, y - run, bottom});
      }
      run = 0;
    }
  }
  return panels;
}

// Topmost and bottommost pixel of `colour` in column x strictly inside p; -1 if none.
std::pair<int, int> colour_span(const IndexedImage &img, const Panel &p, int x, uint8_t colour) {
  int top = -1, bottom = -1;
  for (int y = p.y0 + 1; y < p.y1; ++y)
    if (img.pixels[static_cast<size_t>(y) * img.width + x] == colour) {
      if (top < 0)
        top = y;
      bottom = y;
    }
  return {top, bottom};
}

constexpr uint8_t kTrainColour = 3, kGradColour = 6, kSkipColour = 7;

MetricsHistory synthetic(int64_t n, int64_t spike_at) {
  MetricsHistory h;
  for (int64_t s = 1; s <= n; ++s)
    h.updates.push_back({s, 4.0 * std::exp(-3.0 * s / n) + 1.0, 1e-3,
                         s == spike_at ? 100.0 : 1.0 + 0.01 * (s % 7)});
  return h;
}

TEST(Render, DecreasingLossFallsAndASpikeReachesTheTop) {
  for (int64_t n : {50, 5000, 1000000}) { // fewer points than columns, more, far more
    MetricsHistory h = synthetic(n, n / 3);
    h.skipped = {n / 2};
    const IndexedImage img = render_metrics(h, "m");
    const std::vector<Panel> panels = find_panels(img);
      ASSERT_EQ(panels.size(), 3u) << n;
    const Panel &loss = panels[0], &gn = panels[2];
    // The loss line's lowest-drawn pixel (largest y) never moves up, left to right.
    int prev = -1, columns = 0;
    for (int x = loss.x0 + 3; x < loss.x1 - 2; ++x) {
      const auto [top, bottom] = colour_span(img, loss, x, kTrainColour);
      if (top < 0)
        continue;
      ++columns;
      EXPECT_GE(top, prev - 1) << "n=" << n << " x=" << x; // 1 px: a marker's edge
      prev = std::max(prev, top);
    }
    EXPECT_GT(columns, (loss.x1 - loss.x0) / 2) << n;
    // Starts near the top (5% headroom), ends near the bottom.
    EXPECT_LT(colour_span(img, loss, loss.x0 + 1, kTrainColour).first, loss.y0 + (loss.y1 - loss.y0) / 10);
    // The spike: the column of step n/3 reaches within 10% of the top.
    const int spike_x = gn.x0 + static_cast<int>(std::lround(double(n / 3 - 1) / double(n - 1) * (gn.x1 - gn.x0)));
    int best = gn.y1;
    for (int x = spike_x - 1; x <= spike_x + 1; ++x) {
      const auto [top, bottom] = colour_span(img, gn, x, kGradColour);
      if (top >= 0)
        best = std::min(best, top);
    }
    EXPECT_LT(best, gn.y0 + (gn.y1 - gn.y0) / 10) << n;
    // Everywhere else the norm stays in the lower part (log scale: 1..1.06 vs 100).
    const auto [far_top, far_bottom] = colour_span(img, gn, gn.x1 - 5, kGradColour);
    EXPECT_GT(far_top, gn.y0 + (gn.y1 - gn.y0) * 8 / 10) << n;
    // The skipped update is a red tick at the foot of the loss panel.
    const int skip_x = loss.x0 + static_cast<int>(std::lround(double(n / 2 - 1) / double(n - 1) * (loss.x1 - loss.x0)));
    EXPECT_EQ(img.pixels[static_cast<size_t>(loss.y1 - 3) * img.width + skip_x], kSkipColour) << n;
  }
}

TEST(Render, OneRecordAndNonFiniteValues) {
  MetricsHistory one;
  one.updates.push_back({7, 2.0, 1e-4, 0.5});
  const IndexedImage img = render_metrics(one, "m");
  const std::vector<Panel> panels = find_panels(img);
  ASSERT_EQ(panels.size(), 3u);
  // One point: a marker in the middle of the step axis and of the value axis.
  const int mid_x = (panels[0].x0 + panels[0].x1) / 2, mid_y = (panels[0].y0 + panels[0].y1) / 2;
  EXPECT_EQ(img.pixels[static_cast<size_t>(mid_y) * img.width + mid_x], kTrainColour);

  MetricsHistory h = synthetic(100, -1);
  h.updates[50].loss = std::nan("");
  h.updates[51].grad_norm = INFINITY;
  h.nonfinite = 2;
  const IndexedImage img2 = render_metrics(h, "m"); // draws around the gap
  const std::vector<Panel> p2 = find_panels(img2);
  ASSERT_EQ(p2.size(), 3u);
  int drawn = 0;
  for (int x = p2[0].x0 + 1; x < p2[0].x1; ++x)
    drawn += colour_span(img2, p2[0], x, kTrainColour).first >= 0;
  EXPECT_GT(drawn, 100);
  EXPECT_THROW(render_metrics(h, "m", {100, 100}), std::invalid_argument);
}

TEST(PlotRun, WritesAPngAtomically) {
  TempDir d;
  {
    MetricsLog log(d / "metrics.jsonl");
    for (int s = 1; s <= 20; ++s)
      log.log_step(s, 3.0 - 0.1 * s, 1e-3, 1.0, 100.0, s);
    log.log_eval(20, 1.2);
  }
  const PlotResult r = plot_run(d.path());
  EXPECT_EQ(r.png_path, d / "metrics.png");
  EXPECT_EQ(r.updates, 20);
  EXPECT_EQ(r.evals, 1);
  const std::string decoded = python(kPngDecoder, r.png_path);
  EXPECT_EQ(decoded.substr(0, 9), "1000 960 ");
  for (const auto &e : fs::directory_iterator(d.path()))
    EXPECT_EQ(e.path().string().find(".tmp."), std::string::npos) << e.path();
  // The error for a directory without metrics names the file.
  TempDir empty;
  try {
    plot_run(empty.path());
    FAIL() << "no error";
  } catch (const std::runtime_error &e) {
    EXPECT_NE(std::string(e.what()).find(empty / "metrics.jsonl"), std::string::npos) << e.what();
  }
}

} // namespace
} // namespace llamart::observe
