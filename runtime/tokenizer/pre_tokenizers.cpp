#include "runtime/tokenizer/pre_tokenizers.h"

#include "runtime/tokenizer/byte_level.h"
#include "runtime/tokenizer/normalizers.h"
#include "runtime/tokenizer/split_patterns.h"
#include "runtime/tokenizer/unicode.h"

#include <algorithm>
#include <optional>
#include <utility>

namespace llamart::tokenizer {

namespace {

enum class Behavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct Segment {
  size_t begin, end; // byte offsets in the piece
  bool is_match;
};

// HF's NormalizedString::split: turns the segments of a piece (matches and
// the gaps between them, covering it all) into new pieces per `behavior`.
void split_by_segments(const Piece &piece, const std::vector<Segment> &segments,
                       Behavior behavior, bool invert, std::vector<Piece> &out) {
  struct Cut {
    size_t begin, end;
    bool remove;
  };
  std::vector<Cut> cuts;
  bool previous_match = false;
  switch (behavior) {
  case Behavior::Isolated:
    for (const auto &s : segments)
      cuts.push_back({s.begin, s.end, false});
    break;
  case Behavior::Removed:
    for (const auto &s : segments)
      cuts.push_back({s.begin, s.end, s.is_match != invert});
    break;
  case Behavior::Contiguous:
    for (const auto &s : segments) {
      const bool m = s.is_match != invert;
      if (m == previous_match && !cuts.empty())
        cuts.back().end = s.end;
      else
        cuts.push_back({s.begin, s.end, false});
      previous_match = m;
    }
    break;
  case Behavior::MergedWithPrevious:
    for (const auto &s : segments) {
      const bool m = s.is_match != invert;
      if (m && !previous_match && !cuts.empty())
        cuts.back().end = s.end;
      else
        cuts.push_back({s.begin, s.end, false});
      previous_match = m;
    }
    break;
  case Behavior::MergedWithNext:
    // Walks backwards: a match joins the piece that follows it.
    for (auto it = segments.rbegin(); it != segments.rend(); ++it) {
      const bool m = it->is_match != invert;
      if (m && !previous_match && !cuts.empty())
        cuts.back().begin = it->begin;
      else
        cuts.push_back({it->begin, it->end, false});
      previous_match = m;
    }
    std::reverse(cuts.begin(), cuts.end());
    break;
  }
  for (const Cut &c : cuts)
    if (!c.remove && c.end > c.begin)
      out.push_back({piece.text.substr(c.begin, c.end - c.begin), piece.at_start && c.begin == 0});
}

// Matches and gaps of `matches` (byte ranges, in order) over [0, size).
std::vector<Segment> segments_from_matches(const std::vector<std::pair<size_t, size_t>> &matches,
                                           size_t size) {
  std::vector<Segment> segments;
  size_t prev = 0;
  for (const auto &[b, e] : matches) {
    if (b != prev)
      segments.push_back({prev, b, false});
    segments.push_back({b, e, true});
    prev = e;
  }
  if (prev != size)
    segments.push_back({prev, size, false});
  return segments;
}

std::vector<std::pair<size_t, size_t>> literal_matches(const std::string &text,
                                                       const std::string &needle) {
  std::vector<std::pair<size_t, size_t>> matches;
  for (size_t pos = 0, hit; (hit = text.find(needle, pos)) != std::string::npos;
       pos = hit + needle.size())
    matches.emplace_back(hit, hit + needle.size());
  return matches;
}

// Byte ranges of a recognised pattern's matches in UTF-8 `text`.
std::vector<std::pair<size_t, size_t>> pattern_matches(SplitPattern pattern,
                                                       const std::string &text) {
  const std::vector<char32_t> cps = decode_utf8(text, "pre-tokenizer input");
  std::vector<size_t> byte_at(cps.size() + 1, 0);
  for (size_t i = 0; i < cps.size(); ++i)
    byte_at[i + 1] = byte_at[i] + (cps[i] < 0x80 ? 1 : cps[i] < 0x800 ? 2 : cps[i] < 0x10000 ? 3 : 4);
  std::vector<std::pair<size_t, size_t>> matches = find_pattern_matches(pattern, cps);
  for (auto &[b, e] : matches)
    b = byte_at[b], e = byte_at[e];
  return matches;
}

class SequencePreTokenizer final : public PreTokenizer {
public:
  explicit SequencePreTokenizer(std::vector<std::unique_ptr<PreTokenizer>> parts)
      : parts_(std::move(parts)) {}
  void split(std::vector<Piece> &pieces) const override {
    for (const auto &p : parts_)
      p->split(pieces);
  }

private:
  std::vector<std::unique_ptr<PreTokenizer>> parts_;
};

class SplitPreTokenizer final : public PreTokenizer {
public:
  SplitPreTokenizer(std::string literal, std::optional<SplitPattern> pattern, Behavior behavior,
                    bool invert)
      : literal_(std::move(literal)), pattern_(pattern), behavior_(behavior), invert_(invert) {}
  void split(std::vector<Piece> &pieces) const override {
    std::vector<Piece> out;
    for (const Piece &p : pieces) {
      const auto matches = pattern_ ? pattern_matches(*pattern_, p.text) : literal_matches(p.text, literal_);
      split_by_segments(p, segments_from_matches(matches, p.text.size()), behavior_, invert_, out);
    }
    pieces.swap(out);
  }

private:
  std::string literal_;
  std::optional<SplitPattern> pattern_;
  Behavior behavior_;
  bool invert_;
};

class MetaspacePreTokenizer final : public PreTokenizer {
public:
  enum class Prepend { Always, First, Never };
  MetaspacePreTokenizer(char32_t replacement, Prepend prepend, bool split)
      : prepend_(prepend), split_(split) {
    append_utf8(replacement_, replacement);
  }
  void split(std::vector<Piece> &pieces) const override {
    std::vector<Piece> out;
    for (Piece &p : pieces) {
      p.text = replace_all(std::move(p.text), " ", replacement_);
      const bool starts = p.text.compare(0, replacement_.size(), replacement_) == 0;
      if (!starts && (prepend_ == Prepend::Always || (prepend_ == Prepend::First && p.at_start)))
        p.text.insert(0, replacement_);
      if (!split_) {
        if (!p.text.empty())
          out.push_back(std::move(p));
        continue;
      }
      split_by_segments(p, segments_from_matches(literal_matches(p.text, replacement_), p.text.size()),
                        Behavior::MergedWithNext, false, out);
    }
    pieces.swap(out);
  }

private:
  std::string replacement_;
  Prepend prepend_;
  bool split_;
};

class ByteLevelPreTokenizer final : public PreTokenizer {
public:
  ByteLevelPreTokenizer(bool add_prefix_space, bool use_regex)
      : add_prefix_space_(add_prefix_space), use_regex_(use_regex) {}
  void split(std::vector<Piece> &pieces) const override {
    std::vector<Piece> out;
    for (Piece &p : pieces) {
      if (add_prefix_space_ && (p.text.empty() || p.text[0] != ' '))
        p.text.insert(0, " ");
      if (use_regex_)
        split_by_segments(p, segments_from_matches(pattern_matches(SplitPattern::Gpt2, p.text), p.text.size()),
                          Behavior::Isolated, false, out);
      else if (!p.text.empty())
        out.push_back(std::move(p));
    }
    for (Piece &p : out)
      p.text = bytes_to_chars(p.text);
    pieces.swap(out);
  }

private:
  bool add_prefix_space_, use_regex_;
};

Behavior parse_behavior(const json &spec, const JsonLoc &at) {
  const std::string b = get_string(spec, "behavior", at);
  if (b == "Removed") return Behavior::Removed;
  if (b == "Isolated") return Behavior::Isolated;
  if (b == "MergedWithPrevious") return Behavior::MergedWithPrevious;
  if (b == "MergedWithNext") return Behavior::MergedWithNext;
  if (b == "Contiguous") return Behavior::Contiguous;
  (at / "behavior").fail("unknown split behavior '" + b + "'");
}

MetaspacePreTokenizer::Prepend parse_prepend_scheme(const json &spec, const JsonLoc &at) {
  using Prepend = MetaspacePreTokenizer::Prepend;
  Prepend scheme = Prepend::Always;
  if (const auto s = get_optional_string(spec, "prepend_scheme", at)) {
    if (*s == "always") scheme = Prepend::Always;
    else if (*s == "first") scheme = Prepend::First;
    else if (*s == "never") scheme = Prepend::Never;
    else (at / "prepend_scheme").fail("unknown prepend scheme '" + *s + "'");
  }
  // Files from before prepend_scheme existed say add_prefix_space instead.
  if (optional_member(spec, "add_prefix_space") && !get_bool(spec, "add_prefix_space", true, at)) {
    if (scheme != Prepend::Never && optional_member(spec, "prepend_scheme"))
      (at / "add_prefix_space").fail("false contradicts prepend_scheme");
    scheme = Prepend::Never;
  }
  return scheme;
}

} // namespace

std::unique_ptr<PreTokenizer> make_pre_tokenizer(const json &spec, const JsonLoc &at) {
  if (spec.is_null())
    return nullptr;
  const std::string type = get_string(spec, "type", at);
  if (type == "Sequence") {
    const json &list = require(spec, "pretokenizers", at);
    if (!list.is_array())
      (at / "pretokenizers").fail("expected an array");
    std::vector<std::unique_ptr<PreTokenizer>> parts;
    for (size_t i = 0; i < list.size(); ++i)
      if (auto p = make_pre_tokenizer(list[i], (at / "pretokenizers")[i]))
        parts.push_back(std::move(p));
    return std::make_unique<SequencePreTokenizer>(std::move(parts));
  }
  if (type == "Split") {
    bool is_regex = false;
    std::string pattern = get_pattern(spec, "pattern", at, &is_regex);
    std::optional<SplitPattern> recognized;
    if (is_regex) {
      recognized = recognize_split_pattern(pattern);
      if (!recognized)
        (at / "pattern").fail("unsupported Split regex \"" + pattern +
                              "\" (supported: the Llama-3, Qwen2 and GPT-2 patterns)");
    } else if (pattern.empty()) {
      (at / "pattern").fail("empty pattern");
    }
    return std::make_unique<SplitPreTokenizer>(std::move(pattern), recognized,
                                               parse_behavior(spec, at),
                                               get_bool(spec, "invert", false, at));
  }
  if (type == "Metaspace")
    return std::make_unique<MetaspacePreTokenizer>(get_char(spec, "replacement", at),
                                                   parse_prepend_scheme(spec, at),
                                                   get_bool(spec, "split", true, at));
  if (type == "ByteLevel")
    return std::make_unique<ByteLevelPreTokenizer>(get_bool(spec, "add_prefix_space", true, at),
                                                   get_bool(spec, "use_regex", true, at));
  at.fail("unsupported pre_tokenizer type '" + type + "'");
}

} // namespace llamart::tokenizer
