// A model written by hand, not by the builder: one "parallel" block (GPT-J /
// PaLM style: attention and SwiGLU both read the same normed input and are
// added to the residual together), embeddings tied to the output projection,
// float64 so that it can be gradient-checked. Parameter names are HF-style
// but need not match a preset.
module attributes {llama.model_name = "parallel-tied"} {
  func.func @forward(
      %emb: tensor<32x8xf64> {llama.param_name = "model.embed_tokens.weight"},
      %norm: tensor<8xf64> {llama.param_name = "model.layers.0.input_layernorm.weight"},
      %wq: tensor<8x8xf64> {llama.param_name = "model.layers.0.self_attn.q_proj.weight"},
      %wk: tensor<4x8xf64> {llama.param_name = "model.layers.0.self_attn.k_proj.weight"},
      %wv: tensor<4x8xf64> {llama.param_name = "model.layers.0.self_attn.v_proj.weight"},
      %wo: tensor<8x8xf64> {llama.param_name = "model.layers.0.self_attn.o_proj.weight"},
      %wg: tensor<16x8xf64> {llama.param_name = "model.layers.0.mlp.gate_proj.weight"},
      %wu: tensor<16x8xf64> {llama.param_name = "model.layers.0.mlp.up_proj.weight"},
      %wd: tensor<8x16xf64> {llama.param_name = "model.layers.0.mlp.down_proj.weight"},
      %fnorm: tensor<8xf64> {llama.param_name = "model.norm.weight"},
      %tokens: tensor<2x8xi32> {llama.input = "tokens"},
      %targets: tensor<2x8xi32> {llama.input = "targets"}) -> tensor<f64> {
    %x = llama.embedding %emb, %tokens : (tensor<32x8xf64>, tensor<2x8xi32>) -> tensor<2x8x8xf64>
    %n = llama.rms_norm %x, %norm {eps = 1.0e-05 : f64, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<8xf64>) -> tensor<2x8x8xf64>
    // Attention: 2 query heads sharing 1 KV head (GQA), head_dim 4.
    %q = llama.matmul %n, %wq {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<8x8xf64>) -> tensor<2x8x8xf64>
    %k = llama.matmul %n, %wk {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<4x8xf64>) -> tensor<2x8x4xf64>
    %v = llama.matmul %n, %wv {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<4x8xf64>) -> tensor<2x8x4xf64>
    %q4 = llama.reshape %q {llama.layer = 0 : i64} : (tensor<2x8x8xf64>) -> tensor<2x8x2x4xf64>
    %k4 = llama.reshape %k {llama.layer = 0 : i64} : (tensor<2x8x4xf64>) -> tensor<2x8x1x4xf64>
    %v4 = llama.reshape %v {llama.layer = 0 : i64} : (tensor<2x8x4xf64>) -> tensor<2x8x1x4xf64>
    %qr = llama.rope %q4 {theta = 1.0e+04 : f64, llama.layer = 0 : i64} : (tensor<2x8x2x4xf64>) -> tensor<2x8x2x4xf64>
    %kr = llama.rope %k4 {theta = 1.0e+04 : f64, llama.layer = 0 : i64} : (tensor<2x8x1x4xf64>) -> tensor<2x8x1x4xf64>
    %o, %lse = llama.attention %qr, %kr, %v4 {scale = 0.5 : f64, llama.layer = 0 : i64} : (tensor<2x8x2x4xf64>, tensor<2x8x1x4xf64>, tensor<2x8x1x4xf64>) -> (tensor<2x8x2x4xf64>, tensor<2x2x8xf64>)
    %o3 = llama.reshape %o {llama.layer = 0 : i64} : (tensor<2x8x2x4xf64>) -> tensor<2x8x8xf64>
    %attn = llama.matmul %o3, %wo {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<8x8xf64>) -> tensor<2x8x8xf64>
    // SwiGLU on the same normed input.
    %g = llama.matmul %n, %wg {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<16x8xf64>) -> tensor<2x8x16xf64>
    %u = llama.matmul %n, %wu {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<16x8xf64>) -> tensor<2x8x16xf64>
    %s = llama.swiglu %g, %u {llama.layer = 0 : i64} : (tensor<2x8x16xf64>, tensor<2x8x16xf64>) -> tensor<2x8x16xf64>
    %mlp = llama.matmul %s, %wd {transpose_rhs = true, llama.layer = 0 : i64} : (tensor<2x8x16xf64>, tensor<8x16xf64>) -> tensor<2x8x8xf64>
    %h1 = llama.add %x, %attn {llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<2x8x8xf64>) -> tensor<2x8x8xf64>
    %h2 = llama.add %h1, %mlp {llama.layer = 0 : i64} : (tensor<2x8x8xf64>, tensor<2x8x8xf64>) -> tensor<2x8x8xf64>
    // Tied output projection: logits = norm(h) @ E^T.
    %f = llama.rms_norm %h2, %fnorm {eps = 1.0e-05 : f64} : (tensor<2x8x8xf64>, tensor<8xf64>) -> tensor<2x8x8xf64>
    %logits = llama.matmul %f, %emb {transpose_rhs = true} : (tensor<2x8x8xf64>, tensor<32x8xf64>) -> tensor<2x8x32xf64>
    %loss = llama.cross_entropy %logits, %targets : (tensor<2x8x32xf64>, tensor<2x8xi32>) -> tensor<f64>
    return %loss : tensor<f64>
  }
}
