//===- EmitUtil.h - helpers shared by the source emitters -------*- C++ -*-===//
#pragma once

#include "mlir/IR/BuiltinTypes.h"
#include "mlir/IR/Value.h"
#include "llvm/Support/Format.h"
#include "llvm/Support/FormatVariadic.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

namespace llama::emit {

inline mlir::RankedTensorType ranked(mlir::Value v) {
  return mlir::cast<mlir::RankedTensorType>(v.getType());
}
inline int64_t numel(mlir::Value v) { return ranked(v).getNumElements(); }
inline int64_t product(llvm::ArrayRef<int64_t> dims) {
  int64_t p = 1;
  for (int64_t d : dims)
    p *= d;
  return p;
}

/// A double literal that round-trips (17 significant digits).
inline std::string lit(double d) {
  std::string s;
  llvm::raw_string_ostream os(s);
  os << llvm::format("%.17g", d);
  return s;
}

/// A C string literal of `s`: quotes and backslashes escaped, control
/// characters as \xNN.
inline std::string cString(llvm::StringRef s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\')
      out += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      out += llvm::formatv("\\x{0:x-2}", static_cast<unsigned>(ch)).str();
      continue;
    }
    out += ch;
  }
  return out + "\"";
}

} // namespace llama::emit
