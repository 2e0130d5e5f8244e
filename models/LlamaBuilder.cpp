//===- LlamaBuilder.cpp - LlamaConfig -> llama dialect module -------------===//
//
// The model as the LLaMA paper describes it: pre-norm RMSNorm, rotary
// attention with optional grouped KV heads, SwiGLU feed-forward, untied (or
// tied) output projection, mean cross-entropy. Weights are [out, in], so
// every linear layer is `matmul(x, W) {transpose_rhs}`.
//
//===----------------------------------------------------------------------===//
#include "models/LlamaBuilder.h"

#include "dialects/llama/IR/LlamaOps.h"

#include "mlir/Dialect/Func/IR/FuncOps.h"
#include "mlir/IR/Builders.h"

#include <cmath>
#include <map>
#include <stdexcept>

using namespace mlir;

namespace {
class ForwardBuilder {
public:
  ForwardBuilder(MLIRContext &ctx, const ::llama::LlamaConfig &c,
                 const ::llama::BuildOptions &o)
      : ctx(ctx), c(c), o(o), b(&ctx), loc(b.getUnknownLoc()),
        elem(o.float64 ? Type(b.getF64Type()) : Type(b.getF32Type())) {}

  /// @prefill / @decode: `o.seqLen` tokens per call at a run-time position,
  /// keys and values appended to per-layer caches of `capacity` rows.
  void buildGenerate(ModuleOp module, StringRef name, int64_t capacity) {
    this->capacity = capacity;
    SmallVector<Type> argTypes;
    auto table = ::llama::paramTable(c);
    for (const auto &p : table)
      argTypes.push_back(tensor(p.shape));
    argTypes.push_back(RankedTensorType::get({o.batch, o.seqLen}, b.getI32Type()));
    argTypes.push_back(RankedTensorType::get({}, b.getI32Type()));
    auto cacheType = tensor({o.batch, capacity, c.num_kv_heads, c.head_dim});
    for (int64_t l = 0; l < 2 * c.num_layers; ++l)
      argTypes.push_back(cacheType);
    auto logitsType = tensor({o.batch, o.seqLen, c.vocab_size});

    b.setInsertionPointToEnd(module.getBody());
    auto fn = func::FuncOp::create(b, loc, name, b.getFunctionType(argTypes, {logitsType}));
    Block *entry = fn.addEntryBlock();
    for (auto [i, p] : llvm::enumerate(table)) {
      fn.setArgAttr(i, mlir::llama::kParamNameAttr, b.getStringAttr(p.name));
      param[p.name] = entry->getArgument(i);
    }
    size_t next = table.size();
    fn.setArgAttr(next, mlir::llama::kInputAttr, b.getStringAttr("tokens"));
    Value tokens = entry->getArgument(next++);
    fn.setArgAttr(next, mlir::llama::kInputAttr, b.getStringAttr("position"));
    position = entry->getArgument(next++);
    for (int64_t l = 0; l < c.num_layers; ++l)
      for (const char *kind : {"key", "value"}) {
        fn.setArgAttr(next, mlir::llama::kKvCacheAttr, b.getStringAttr(kind));
        fn.setArgAttr(next, mlir::llama::kLayerAttr, b.getI64IntegerAttr(l));
        caches.push_back(entry->getArgument(next++));
      }

    b.setInsertionPointToEnd(entry);
    Value embed = param.at("model.embed_tokens.weight");
    Value h = mlir::llama::EmbeddingOp::create(
        b, loc, tensor({o.batch, o.seqLen, c.hidden_size}), embed, tokens,
        /*vocab_shard=*/nullptr);
    for (int64_t l = 0; l < c.num_layers; ++l)
      h = layer(l, h);
    Value normed = rmsNorm(h, param.at("model.norm.weight"));
    Value head = c.tie_word_embeddings ? embed : param.at("lm_head.weight");
    func::ReturnOp::create(b, loc, linear(normed, head));
  }

  OwningOpRef<ModuleOp> build() {
    auto module = ModuleOp::create(loc);
    module->setAttr(mlir::llama::kModelNameAttr, b.getStringAttr(c.name));
    module->setAttr(mlir::llama::kConfigAttr, b.getStringAttr(::llama::toHFConfigJson(c)));
    module->setAttr(mlir::llama::kInitStdAttr, b.getF64FloatAttr(c.init_std));

    // Arguments: parameters in HF order, then tokens and targets.
    SmallVector<Type> argTypes;
    auto table = ::llama::paramTable(c);
    for (const auto &p : table)
      argTypes.push_back(tensor(p.shape));
    auto ids = RankedTensorType::get({o.batch, o.seqLen}, b.getI32Type());
    argTypes.push_back(ids);
    argTypes.push_back(ids);
    auto lossType = RankedTensorType::get({}, elem);

    b.setInsertionPointToEnd(module.getBody());
    auto fn = func::FuncOp::create(b, loc, "forward",
                                   b.getFunctionType(argTypes, {lossType}));
    Block *entry = fn.addEntryBlock();
    for (auto [i, p] : llvm::enumerate(table)) {
      fn.setArgAttr(i, mlir::llama::kParamNameAttr, b.getStringAttr(p.name));
      param[p.name] = entry->getArgument(i);
    }
    fn.setArgAttr(table.size(), mlir::llama::kInputAttr, b.getStringAttr("tokens"));
    fn.setArgAttr(table.size() + 1, mlir::llama::kInputAttr, b.getStringAttr("targets"));
    Value tokens = entry->getArgument(table.size());
    Value targets = entry->getArgument(table.size() + 1);

    b.setInsertionPointToEnd(entry);
    Value embed = param.at("model.embed_tokens.weight");
    Value h = mlir::llama::EmbeddingOp::create(b, loc, tensor({o.batch, o.seqLen, c.hidden_size}),
                                         embed, tokens, /*vocab_shard=*/nullptr);
    for (int64_t l = 0; l < c.num_layers; ++l)
      h = layer(l, h);
    Value normed = rmsNorm(h, param.at("model.norm.weight"));
    Value head = c.tie_word_embeddings ? embed : param.at("lm_head.weight");
    Value logits = linear(normed, head);
    Value loss = mlir::llama::CrossEntropyOp::create(b, loc, lossType, logits, targets,
                                               b.getI64IntegerAttr(-100));
    func::ReturnOp::create(b, loc, loss);
    return module;
  }

private:
  RankedTensorType tensor(ArrayRef<int64_t> shape) {
    return RankedTensorType::get(shape, elem);
  }

  Value rmsNorm(Value x, Value w) {
    return mlir::llama::RMSNormOp::create(b, loc, x.getType(), x, w,
                                    b.getF64FloatAttr(c.rms_norm_eps));
  }

  /// x [B, T, in] @ W[out, in]^T -> [B, T, out].
  Value linear(Value x, Value w) {
    int64_t out = cast<RankedTensorType>(w.getType()).getDimSize(0);
    return mlir::llama::MatmulOp::create(b, loc, tensor({o.batch, o.seqLen, out}), x,
                                   w, /*transpose_lhs=*/false,
                                   /*transpose_rhs=*/true);
  }

  Value reshape(Value x, ArrayRef<int64_t> shape) {
    return mlir::llama::ReshapeOp::create(b, loc, tensor(shape), x);
  }

  Value layer(int64_t l, Value x) {
    // Every op built for this layer is tagged with its index (remat `full`
    // and per-layer reports key on it).
    struct Tagger : OpBuilder::Listener {
      Attribute tag;
      void notifyOperationInserted(Operation *op, OpBuilder::InsertPoint) override {
        op->setAttr(mlir::llama::kLayerAttr, tag);
      }
    } tagger;
    tagger.tag = b.getI64IntegerAttr(l);
    b.setListener(&tagger);

    std::string p = "model.layers." + std::to_string(l) + ".";
    int64_t B = o.batch, T = o.seqLen, H = c.num_heads, KV = c.num_kv_heads,
            D = c.head_dim;
    Value n1 = rmsNorm(x, param.at(p + "input_layernorm.weight"));
    Value q = reshape(linear(n1, param.at(p + "self_attn.q_proj.weight")), {B, T, H, D});
    Value k = reshape(linear(n1, param.at(p + "self_attn.k_proj.weight")), {B, T, KV, D});
    Value v = reshape(linear(n1, param.at(p + "self_attn.v_proj.weight")), {B, T, KV, D});
    auto theta = b.getF64FloatAttr(c.rope_theta);
    // RoPE scaling: the frequencies as numbers in the IR (none: plain RoPE).
    mlir::DenseF64ArrayAttr invFreq;
    mlir::FloatAttr attentionFactor;
    if (c.rope_scaling.type != ::llama::RopeType::Default) {
      invFreq = b.getDenseF64ArrayAttr(::llama::ropeInverseFrequencies(c, position ? capacity : T));
      if (double a = ::llama::ropeAttentionFactor(c); a != 1.0)
        attentionFactor = b.getF64FloatAttr(a);
    }
    auto scale = b.getF64FloatAttr(1.0 / std::sqrt(static_cast<double>(D)));
    Value attnOut;
    if (position) { // generation: rotate at the run-time position, use the cache
      auto capacityAttr = b.getI64IntegerAttr(capacity);
      q = mlir::llama::RopeAtOp::create(b, loc, q.getType(), q, position, theta, capacityAttr,
                                        invFreq, attentionFactor);
      k = mlir::llama::RopeAtOp::create(b, loc, k.getType(), k, position, theta, capacityAttr,
                                        invFreq, attentionFactor);
      attnOut = mlir::llama::AttentionCachedOp::create(
          b, loc, tensor({B, T, H, D}), q, k, v, caches[2 * l], caches[2 * l + 1],
          position, scale);
    } else {
      q = mlir::llama::RopeOp::create(b, loc, q.getType(), q, theta, invFreq, attentionFactor);
      k = mlir::llama::RopeOp::create(b, loc, k.getType(), k, theta, invFreq, attentionFactor);
      attnOut = mlir::llama::AttentionOp::create(b, loc, tensor({B, T, H, D}),
                                                 tensor({B, H, T}), q, k, v, scale)
                    .getResult();
    }
    Value o3 = reshape(attnOut, {B, T, H * D});
    Value h = mlir::llama::AddOp::create(b, loc, x,
                                   linear(o3, param.at(p + "self_attn.o_proj.weight")));
    Value n2 = rmsNorm(h, param.at(p + "post_attention_layernorm.weight"));
    Value gate = linear(n2, param.at(p + "mlp.gate_proj.weight"));
    Value up = linear(n2, param.at(p + "mlp.up_proj.weight"));
    Value act = mlir::llama::SwigluOp::create(b, loc, gate, up);
    Value out = mlir::llama::AddOp::create(b, loc, h,
                                     linear(act, param.at(p + "mlp.down_proj.weight")));
    b.setListener(nullptr);
    return out;
  }

  MLIRContext &ctx;
  const ::llama::LlamaConfig &c;
  const ::llama::BuildOptions &o;
  OpBuilder b;
  Location loc;
  Type elem;
  std::map<std::string, Value> param;
  // Generation only.
  Value position;
  SmallVector<Value> caches; // key, value per layer
  int64_t capacity = 0;
};
} // namespace

namespace llama {
OwningOpRef<ModuleOp> buildForward(MLIRContext &ctx,
                                          const LlamaConfig &config,
                                          const BuildOptions &options) {
  validate(config);
  if (options.batch < 1)
    throw std::runtime_error("batch must be >= 1, got " + std::to_string(options.batch));
  if (options.seqLen < 1)
    throw std::runtime_error("seq-len must be >= 1, got " + std::to_string(options.seqLen));
  if (options.seqLen > config.max_position_embeddings)
    throw std::runtime_error("seq-len " + std::to_string(options.seqLen) +
                             " exceeds max_position_embeddings " +
                             std::to_string(config.max_position_embeddings) +
                             " of '" + config.name + "'");
  ctx.getOrLoadDialect<mlir::llama::LlamaDialect>();
  ctx.getOrLoadDialect<func::FuncDialect>();
  return ForwardBuilder(ctx, config, options).build();
}

void addGenerateFunctions(ModuleOp module, const LlamaConfig &config,
                          const GenerateOptions &options) {
  validate(config);
  int64_t capacity = options.capacity ? options.capacity : config.max_position_embeddings;
  if (options.batch < 1 || options.chunk < 1)
    throw std::runtime_error("generation batch and chunk must be >= 1");
  if (capacity < options.chunk || capacity > config.max_position_embeddings)
    throw std::runtime_error(
        "KV cache capacity " + std::to_string(capacity) + " must lie in [chunk " +
        std::to_string(options.chunk) + ", max_position_embeddings " +
        std::to_string(config.max_position_embeddings) + "]");
  MLIRContext &ctx = *module.getContext();
  for (auto [name, chunk] : {std::pair<const char *, int64_t>{"prefill", options.chunk},
                             {"decode", 1}}) {
    BuildOptions o;
    o.batch = options.batch;
    o.seqLen = chunk;
    o.float64 = options.float64;
    ForwardBuilder(ctx, config, o).buildGenerate(module, name, capacity);
  }
}
} // namespace llama
