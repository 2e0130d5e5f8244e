#include "runtime/checkpoint/meta_folder.h"

#include "runtime/checkpoint/hf_folder.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <stdexcept>
#include <thread>

namespace llamart::ckpt {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// How a Meta tensor is laid out across model-parallel files.
enum class Split { Replicated, Dim0, Dim1, Embedding };
// Which head count its rows are permuted with (RoPE pairs -> halves).
enum class Rope { None, Query, Key };

struct LayerRule {
  const char *meta; // after "layers.L."
  const char *hf;   // after "model.layers.L."
  Split split;
  Rope rope;
};

constexpr LayerRule kLayerRules[] = {
    {"attention.wq.weight", "self_attn.q_proj.weight", Split::Dim0, Rope::Query},
    {"attention.wk.weight", "self_attn.k_proj.weight", Split::Dim0, Rope::Key},
    {"attention.wv.weight", "self_attn.v_proj.weight", Split::Dim0, Rope::None},
    {"attention.wo.weight", "self_attn.o_proj.weight", Split::Dim1, Rope::None},
    {"feed_forward.w1.weight", "mlp.gate_proj.weight", Split::Dim0, Rope::None},
    {"feed_forward.w2.weight", "mlp.down_proj.weight", Split::Dim1, Rope::None},
    {"feed_forward.w3.weight", "mlp.up_proj.weight", Split::Dim0, Rope::None},
    {"attention_norm.weight", "input_layernorm.weight", Split::Replicated, Rope::None},
    {"ffn_norm.weight", "post_attention_layernorm.weight", Split::Replicated, Rope::None},
};

struct TopRule {
  const char *meta;
  const char *hf;
  Split split;
};

constexpr TopRule kTopRules[] = {
    {"tok_embeddings.weight", "model.embed_tokens.weight", Split::Embedding},
    {"norm.weight", "model.norm.weight", Split::Replicated},
    {"output.weight", "lm_head.weight", Split::Dim0},
};

// The buffer old checkpoints saved; it follows from head_dim and rope_theta.
constexpr const char *kRopeFreqs = "rope.freqs";

struct Mapping {
  std::string hf;
  Split split = Split::Replicated;
  Rope rope = Rope::None;
};

// "12.rest" -> (12, "rest") for canonical decimal layer numbers only, so
// that each Meta name has exactly one HF name and back.
bool split_layer(const std::string &s, const std::string &prefix, std::string *layer,
                 std::string *rest) {
  if (s.compare(0, prefix.size(), prefix) != 0)
    return false;
  const size_t dot = s.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size() || dot - prefix.size() > 9)
    return false;
  *layer = s.substr(prefix.size(), dot - prefix.size());
  for (char c : *layer)
    if (c < '0' || c > '9')
      return false;
  if (layer->size() > 1 && (*layer)[0] == '0')
    return false;
  *rest = s.substr(dot + 1);
  return true;
}

std::optional<Mapping> map_meta_name(const std::string &meta) {
  for (const TopRule &r : kTopRules)
    if (meta == r.meta)
      return Mapping{r.hf, r.split, Rope::None};
  std::string layer, rest;
  if (!split_layer(meta, "layers.", &layer, &rest))
    return std::nullopt;
  for (const LayerRule &r : kLayerRules)
    if (rest == r.meta)
      return Mapping{"model.layers." + layer + "." + r.hf, r.split, r.rope};
  return std::nullopt;
}

// JSON field readers for params.json: one-line errors naming the field.
struct ParamsReader {
  const std::string &path;
  const json &j;

  [[noreturn]] void fail(const std::string &what) const {
    throw std::runtime_error(path + ": " + what);
  }
  const json *find(const char *key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::optional<int64_t> opt_int(const char *key) const {
    const json *v = find(key);
    if (!v)
      return std::nullopt;
    if (v->is_number_integer())
      return v->get<int64_t>();
    // 4096.0 is an integer too (Python's json writes floats like this).
    if (v->is_number_float()) {
      const double d = v->get<double>();
      if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9e15)
        return static_cast<int64_t>(d);
    }
    fail("field '" + std::string(key) + "' must be an integer (got " + v->dump() + ")");
  }
  int64_t req_int(const char *key) const {
    if (auto v = opt_int(key))
      return *v;
    fail("missing field '" + std::string(key) + "'");
  }
  int64_t req_positive(const char *key) const {
    const int64_t v = req_int(key);
    if (v <= 0)
      fail("field '" + std::string(key) + "' must be > 0 (got " + std::to_string(v) + ")");
    return v;
  }
  std::optional<double> opt_number(const char *key) const {
    const json *v = find(key);
    if (!v)
      return std::nullopt;
    if (!v->is_number() || !std::isfinite(v->get<double>()) || !(v->get<double>() > 0))
      fail("field '" + std::string(key) + "' must be a number > 0 (got " + v->dump() + ")");
    return v->get<double>();
  }
};

// The program's value of an HF field (rope_theta also from transformers 5's
// rope_parameters); nullptr when the program does not state it.
const json *program_field(const json &program, const char *key) {
  auto it = program.find(key);
  if (it != program.end() && !it->is_null())
    return &*it;
  if (std::strcmp(key, "rope_theta") == 0) {
    auto rp = program.find("rope_parameters");
    if (rp != program.end() && rp->is_object()) {
      auto theta = rp->find("rope_theta");
      if (theta != rp->end() && theta->is_number())
        return &*theta;
    }
  }
  return nullptr;
}

bool same_number(const json &a, const json &b) {
  return a.is_number() && b.is_number() && a.get<double>() == b.get<double>();
}

// The shortest text that reads back as v (1e-05, not 1.0000000000000001e-05).
std::string number_text(double v) { return json(v).dump(); }

} // namespace

// --- names and params.json ------------------------------------------------------

std::string meta_shard_file_name(size_t rank) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "consolidated.%02zu.pth", rank);
  return buf;
}

bool is_meta_model_folder(const std::string &dir) {
  std::error_code ec;
  const fs::path p(dir);
  return fs::is_directory(p, ec) && fs::is_regular_file(p / kMetaParamsFile, ec) &&
         fs::is_regular_file(p / meta_shard_file_name(0), ec);
}

std::string meta_to_hf_name(const std::string &meta_name) {
  auto m = map_meta_name(meta_name);
  return m ? m->hf : "";
}

std::string hf_to_meta_name(const std::string &hf_name) {
  for (const TopRule &r : kTopRules)
    if (hf_name == r.hf)
      return r.meta;
  std::string layer, rest;
  if (!split_layer(hf_name, "model.layers.", &layer, &rest))
    return "";
  for (const LayerRule &r : kLayerRules)
    if (rest == r.hf)
      return "layers." + layer + "." + r.meta;
  return "";
}

std::optional<int64_t> MetaParams::ffn_hidden_size() const {
  if (!multiple_of)
    return std::nullopt;
  // Meta's FeedForward (llama/model.py): hidden = int(2 * (4 * dim) / 3),
  // then int(ffn_dim_multiplier * hidden); Python's int() truncates, and
  // 2 * (4 * dim) / 3 is exact in integers.
  int64_t hidden = 2 * (4 * dim) / 3;
  if (ffn_dim_multiplier)
    hidden = static_cast<int64_t>(*ffn_dim_multiplier * static_cast<double>(hidden));
  return *multiple_of * ((hidden + *multiple_of - 1) / *multiple_of);
}

MetaParams read_meta_params(const std::string &path) {
  const json j = read_json_object_file(path);
  const ParamsReader r{path, j};
  MetaParams p;
  p.dim = r.req_positive("dim");
  p.n_layers = r.req_positive("n_layers");
  p.n_heads = r.req_positive("n_heads");
  p.n_kv_heads = r.opt_int("n_kv_heads").value_or(p.n_heads);
  p.vocab_size = r.req_int("vocab_size");
  p.multiple_of = r.opt_int("multiple_of");
  p.ffn_dim_multiplier = r.opt_number("ffn_dim_multiplier");
  if (!r.find("norm_eps"))
    r.fail("missing field 'norm_eps'");
  p.norm_eps = *r.opt_number("norm_eps");
  p.rope_theta = r.opt_number("rope_theta").value_or(10000.0);
  if (const json *v = r.find("use_scaled_rope")) {
    if (!v->is_boolean())
      r.fail("field 'use_scaled_rope' must be true or false (got " + v->dump() + ")");
    p.use_scaled_rope = v->get<bool>();
  }
  // Bounds that keep the derived sizes far from overflow.
  constexpr int64_t kMax = int64_t(1) << 31;
  if (p.dim > kMax || p.n_layers > kMax || p.n_heads > kMax || p.vocab_size > kMax)
    r.fail("a size field exceeds 2^31");
  if (p.multiple_of && (*p.multiple_of <= 0 || *p.multiple_of > kMax))
    r.fail("field 'multiple_of' must be in 1..2^31 (got " + std::to_string(*p.multiple_of) +
           ")");
  if (p.ffn_dim_multiplier && *p.ffn_dim_multiplier > 1024)
    r.fail("field 'ffn_dim_multiplier' is implausibly large (" +
           number_text(*p.ffn_dim_multiplier) + ")");
  if (p.dim % p.n_heads != 0)
    r.fail("n_heads (" + std::to_string(p.n_heads) + ") must divide dim (" +
           std::to_string(p.dim) + ")");
  if (p.n_kv_heads <= 0 || p.n_heads % p.n_kv_heads != 0)
    r.fail("n_kv_heads (" + std::to_string(p.n_kv_heads) + ") must divide n_heads (" +
           std::to_string(p.n_heads) + ")");
  if (p.head_dim() % 2 != 0)
    r.fail("head_dim dim / n_heads = " + std::to_string(p.head_dim()) +
           " is odd (RoPE rotates pairs)");
  return p;
}

void check_meta_params_compatible(const MetaParams &params, const std::string &params_path,
                                  const json &program, const std::string &program_name) {
  auto mismatch = [&](const std::string &field, const std::string &have, const char *hf_key,
                      const json &want) {
    throw std::runtime_error(params_path + ": " + field + " is " + have + ", but model " +
                             program_name + " was compiled with " + hf_key + " " +
                             want.dump() +
                             " (compile a program from this params.json to use these "
                             "weights)");
  };
  auto check = [&](const std::string &field, const json &have, const char *hf_key) {
    const json *want = program_field(program, hf_key);
    if (want && !same_number(have, *want))
      mismatch(field, have.is_number_float() ? number_text(have.get<double>()) : have.dump(),
               hf_key, *want);
  };
  // Shapes first, in the order of params.json's own fields.
  check("dim", params.dim, "hidden_size");
  check("n_layers", params.n_layers, "num_hidden_layers");
  check("n_heads", params.n_heads, "num_attention_heads");
  if (program_field(program, "num_key_value_heads"))
    check("n_kv_heads", params.n_kv_heads, "num_key_value_heads");
  else
    check("n_kv_heads", params.n_kv_heads, "num_attention_heads"); // HF's default
  check("dim / n_heads", params.head_dim(), "head_dim");
  if (params.vocab_size > 0)
    check("vocab_size", params.vocab_size, "vocab_size");
  if (auto ffn = params.ffn_hidden_size())
    check("the FFN size from dim, multiple_of and ffn_dim_multiplier", *ffn,
          "intermediate_size");
  check("norm_eps", params.norm_eps, "rms_norm_eps");
  check("rope_theta", params.rope_theta, "rope_theta");

  const json *scaling = program_field(program, "rope_scaling");
  const bool llama3_scaling = scaling && scaling->is_object() &&
                             scaling->value("rope_type", scaling->value("type", "")) == "llama3";
  if (params.use_scaled_rope != (scaling != nullptr) ||
      (params.use_scaled_rope && !llama3_scaling))
    mismatch("use_scaled_rope", params.use_scaled_rope ? "true" : "false", "rope_scaling",
             scaling ? *scaling : json(nullptr));
  // What every Meta LLaMA is, against programs that state otherwise.
  const std::pair<const char *, json> fixed[] = {{"tie_word_embeddings", false},
                                                 {"model_type", "llama"},
                                                 {"hidden_act", "silu"},
                                                 {"attention_bias", false},
                                                 {"mlp_bias", false}};
  for (const auto &[key, meta_value] : fixed) {
    const json *want = program_field(program, key);
    if (want && *want != meta_value)
      throw std::runtime_error(params_path + ": a Meta LLaMA checkpoint has " + key + " " +
                               meta_value.dump() + ", but model " + program_name +
                               " was compiled with " + want->dump());
  }
}

// --- the folder ------------------------------------------------------------------

MetaFolder::MetaFolder(const std::string &dir) : dir_(dir) {
  const fs::path root(dir);
  params_path_ = (root / kMetaParamsFile).string();
  params_ = read_meta_params(params_path_);

  // consolidated.NN.pth for NN = 00 .. N-1, nothing skipped.
  static const std::regex shard_re(R"(consolidated\.([0-9]+)\.pth)");
  std::set<size_t> ranks;
  std::error_code ec;
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) {
    std::smatch m;
    const std::string name = it->path().filename().string();
    if (std::regex_match(name, m, shard_re)) {
      if (m[1].length() > 4)
        throw std::runtime_error((root / name).string() +
                                 ": model-parallel rank out of range");
      const size_t rank = std::stoul(m[1].str());
      if (name != meta_shard_file_name(rank))
        throw std::runtime_error((root / name).string() +
                                 ": expected consolidated.NN.pth with a two-digit rank");
      ranks.insert(rank);
    }
  }
  if (ec)
    throw std::runtime_error(dir + ": cannot list: " + ec.message());
  for (size_t r = 0; r < ranks.size(); ++r)
    if (!ranks.count(r))
      throw std::runtime_error((root / meta_shard_file_name(r)).string() +
                               ": missing (the folder has " +
                               meta_shard_file_name(*ranks.rbegin()) + ")");
  const int64_t n = static_cast<int64_t>(ranks.size());
  if (n == 0)
    throw std::runtime_error(dir + ": no " + meta_shard_file_name(0));
  for (size_t r = 0; r < ranks.size(); ++r)
    shards_.push_back(std::make_unique<TorchFile>((root / meta_shard_file_name(r)).string()));

  const TorchFile &first = *shards_[0];
  for (size_t i = 0; i < first.num_tensors(); ++i) {
    const std::string &name = first.name(i);
    if (name == kRopeFreqs)
      continue;
    const std::optional<Mapping> map = map_meta_name(name);
    if (!map)
      throw std::runtime_error(first.path() + ": unexpected tensor " + name +
                               " (not one Meta's LLaMA model saves)");
    MetaTensor t;
    t.meta_name = name;
    t.hf_name = map->hf;
    t.dtype = first.dtype(i);
    t.shape = first.ref(i).shape;
    std::vector<size_t> where{i};

    // The split dimension, from the layout rule and (for the embedding, whose
    // layout changed between Llama 2 and 3) the slice's shape.
    if (t.shape.size() != (map->split == Split::Replicated ? 1u : 2u))
      throw std::runtime_error(first.path() + ": tensor " + name + " has rank " +
                               std::to_string(t.shape.size()) + ", expected " +
                               (map->split == Split::Replicated ? "1" : "2"));
    switch (map->split) {
    case Split::Replicated: t.split_dim = -1; break;
    case Split::Dim0: t.split_dim = 0; break;
    case Split::Dim1: t.split_dim = 1; break;
    case Split::Embedding:
      if (n == 1 || t.shape[1] == params_.dim)
        t.split_dim = 0; // VocabParallelEmbedding (or one file: no split at all)
      else if (t.shape[1] * n == params_.dim)
        t.split_dim = 1; // ParallelEmbedding
      else
        throw std::runtime_error(first.path() + ": tensor " + name + " has shape [" +
                                 std::to_string(t.shape[0]) + ", " +
                                 std::to_string(t.shape[1]) + "], neither dim " +
                                 std::to_string(params_.dim) + " nor dim / " +
                                 std::to_string(n) + " model-parallel files wide");
      break;
    }
    if (n == 1)
      t.split_dim = -1; // one file: nothing to merge

    for (int64_t s = 1; s < n; ++s) {
      const TorchFile &other = *shards_[static_cast<size_t>(s)];
      const std::optional<size_t> j = other.find(name);
      if (!j)
        throw std::runtime_error(other.path() + ": missing tensor " + name + " (" +
                                 first.path() + " has it)");
      if (other.dtype(*j) != t.dtype)
        throw std::runtime_error(other.path() + ": tensor " + name +
                                 " has another dtype than in " + first.path());
      if (other.ref(*j).shape != t.shape)
        throw std::runtime_error(other.path() + ": tensor " + name +
                                 " has another shape than in " + first.path() +
                                 " (model-parallel slices are equal)");
      where.push_back(*j);
    }
    if (t.split_dim >= 0) {
      int64_t &merged = t.shape[static_cast<size_t>(t.split_dim)];
      if (__builtin_mul_overflow(merged, n, &merged))
        throw std::runtime_error(first.path() + ": tensor " + name + " is too large");
    }

    if (map->rope != Rope::None) {
      const int64_t heads = map->rope == Rope::Query ? params_.n_heads : params_.n_kv_heads;
      const char *field = map->rope == Rope::Query ? "n_heads" : "n_kv_heads";
      if (t.shape[0] != heads * params_.head_dim())
        throw std::runtime_error(first.path() + ": tensor " + name + " has " +
                                 std::to_string(t.shape[0]) + " rows over " +
                                 std::to_string(n) + " file(s), but " + params_path_ +
                                 " says " + field + " " + std::to_string(heads) +
                                 " x head_dim " + std::to_string(params_.head_dim()));
      t.rope_heads = heads;
    }
    tensors_.push_back(std::move(t));
    index_.push_back(std::move(where));
  }
  // Every file holds the same tensors: the first's were found in the others,
  // so a larger table elsewhere means an extra tensor.
  for (size_t s = 1; s < shards_.size(); ++s)
    for (size_t i = 0; i < shards_[s]->num_tensors(); ++i)
      if (!first.find(shards_[s]->name(i)))
        throw std::runtime_error(shards_[s]->path() + ": tensor " + shards_[s]->name(i) +
                                 " is not in " + first.path());
}

MetaFolder::~MetaFolder() = default;

const std::string &MetaFolder::shard_path(size_t rank) const { return shards_.at(rank)->path(); }

Tensor MetaFolder::read(size_t i) const {
  const MetaTensor &t = tensors_.at(i);
  const size_t n = shards_.size();
  const size_t width = dtype_bytes(t.dtype);

  // The slices, read in parallel (one file each; pread is thread-safe):
  // reading and checksumming a slice of a large model takes seconds.
  std::vector<Tensor> slices(n);
  std::vector<std::string> errors(n);
  auto read_slice = [&](size_t s) {
    try {
      slices[s] = shards_[s]->read(index_[i][s]);
    } catch (const std::exception &e) {
      errors[s] = e.what();
    }
  };
  std::vector<std::thread> readers;
  for (size_t s = 1; s < n; ++s)
    readers.emplace_back(read_slice, s);
  read_slice(0);
  for (std::thread &r : readers)
    r.join();
  for (const std::string &e : errors)
    if (!e.empty())
      throw std::runtime_error(e);

  Tensor out;
  out.dtype = t.dtype;
  out.shape = t.shape;
  if (t.split_dim < 0) {
    for (size_t s = 1; s < n; ++s)
      if (slices[s].data != slices[0].data)
        throw std::runtime_error(shards_[s]->path() + ": tensor " + t.meta_name +
                                 " differs from " + shards_[0]->path() +
                                 "'s (it is replicated across model-parallel files)");
    out.data = std::move(slices[0].data);
  } else {
    out.data.resize(static_cast<size_t>(out.numel()) * width);
  }

  // Rows of the merged tensor: for wq/wk, merged row h*hd + 2i + j goes to
  // h*hd + j*hd/2 + i (transformers' permute); other rows stay in place.
  const int64_t rows = t.shape[0];
  const size_t row_bytes = static_cast<size_t>(t.shape.size() == 2 ? t.shape[1] : 1) * width;
  const int64_t hd = t.rope_heads > 0 ? rows / t.rope_heads : 0;
  auto dest_row = [&](int64_t m) {
    if (hd == 0)
      return m;
    const int64_t h = m / hd, r = m % hd;
    return h * hd + (r % 2) * (hd / 2) + r / 2;
  };

  if (t.split_dim < 0) {
    if (hd > 0) {
      std::vector<uint8_t> permuted(out.data.size());
      for (int64_t m = 0; m < rows; ++m)
        std::memcpy(permuted.data() + static_cast<size_t>(dest_row(m)) * row_bytes,
                    out.data.data() + static_cast<size_t>(m) * row_bytes, row_bytes);
      out.data = std::move(permuted);
    }
  } else if (t.split_dim == 0) {
    const int64_t slice_rows = rows / static_cast<int64_t>(n);
    for (size_t s = 0; s < n; ++s)
      for (int64_t r = 0; r < slice_rows; ++r) {
        const int64_t m = static_cast<int64_t>(s) * slice_rows + r;
        std::memcpy(out.data.data() + static_cast<size_t>(dest_row(m)) * row_bytes,
                    slices[s].data.data() + static_cast<size_t>(r) * row_bytes, row_bytes);
      }
  } else { // split on dim 1: each row is the slices' rows side by side
    const size_t slice_bytes = row_bytes / n;
    for (int64_t r = 0; r < rows; ++r)
      for (size_t s = 0; s < n; ++s)
        std::memcpy(out.data.data() + static_cast<size_t>(dest_row(r)) * row_bytes +
                        s * slice_bytes,
                    slices[s].data.data() + static_cast<size_t>(r) * slice_bytes,
                    slice_bytes);
  }
  return out;
}

File MetaFolder::read_all() const {
  File file;
  for (size_t i = 0; i < tensors_.size(); ++i)
    file.tensors.emplace(tensors_[i].hf_name, read(i));
  return file;
}

} // namespace llamart::ckpt
