// `verify`: one train_step on given weights and a given batch, with the loss
// and every gradient written out, so the compiled program can be checked
// tensor by tensor against a reference implementation (PyTorch/HF) or finite
// differences.
#pragma once
#include "runtime/program/program.h"

#include <string>

namespace llamart::cli {

struct VerifyOptions {
  std::string weights;    // --weights: params by HF name (F32/F64/F16/BF16)
  std::string batch_file; // --batch-file: "input_ids" int32/int64 [batch, seq_len + 1]
  std::string out;        // --out: "loss" (shape []) + gradients by HF name
  bool cpu = false;       // --cpu: a device program's CPU step, not its device step
};

// Throws std::runtime_error naming the file on any mismatch. Returns the loss.
double run_verify(const ProgramInfo &program, const VerifyOptions &options);

} // namespace llamart::cli
