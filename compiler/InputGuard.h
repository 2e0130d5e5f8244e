//===- InputGuard.h - checks on MLIR text before it reaches the parser -*- C++ -*-===//
//
// MLIR's parser is recursive descent: every nested (, [, { or < costs stack,
// so a hostile MODEL.mlir of a few hundred KB of "((((..." overflows the
// stack instead of failing with a diagnostic (found by tools/fuzz, mlir_fuzz).
// Real models nest a handful of levels; anything deeper than kMaxNesting is
// rejected before parsing with a one-line error naming the line.
//
//===----------------------------------------------------------------------===//
#pragma once

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace llama {

inline constexpr unsigned kMaxNesting = 256;

/// The error for `text` if brackets outside string literals and `//`
/// comments nest deeper than `maxDepth`, else nullopt.
inline std::optional<std::string> checkNesting(llvm::StringRef text,
                                               unsigned maxDepth = kMaxNesting) {
  unsigned depth = 0, line = 1;
  bool inString = false;
  for (size_t i = 0; i < text.size(); ++i) {
    char c = text[i];
    if (c == '\n')
      ++line;
    if (inString) {
      if (c == '\\')
        ++i;
      else if (c == '"' || c == '\n')
        inString = false;
      continue;
    }
    if (c == '"') {
      inString = true;
    } else if (c == '/' && i + 1 < text.size() && text[i + 1] == '/') {
      while (i < text.size() && text[i] != '\n')
        ++i;
      ++line;
    } else if (c == '(' || c == '[' || c == '{' || c == '<') {
      if (++depth > maxDepth)
        return "line " + std::to_string(line) + ": brackets nest deeper than " +
               std::to_string(maxDepth) + " levels (not a model; refusing to parse)";
    } else if ((c == ')' || c == ']' || c == '}' || c == '>') && depth > 0) {
      --depth;
    }
  }
  return std::nullopt;
}

} // namespace llama
