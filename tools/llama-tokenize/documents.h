// Streaming text input for llama-tokenize: lines for tokenizer training and
// documents for encoding, read file by file so that corpora larger than
// memory work.
//
// A document is a paragraph (lines separated by one or more blank lines) or,
// with a separator, the lines between two lines equal to it (the '%' lines of
// fortune files). Inside a separator-delimited document blank lines are kept;
// leading and trailing blank lines are dropped, as are empty documents. A
// document never spans two input files.
#pragma once
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace llama_tokenize {

// Lines of several files in order, without the line terminator ("\n" or
// "\r\n"). Read errors are std::runtime_error naming the file.
class LineReader {
public:
  explicit LineReader(std::vector<std::string> files);
  // False once all files are exhausted. `new_file` is set when `line` is the
  // first line of a file (document boundaries).
  bool next(std::string *line, bool *new_file = nullptr);
  const std::string &current_file() const;

private:
  bool open_next();

  std::vector<std::string> files_;
  size_t index_ = 0;
  bool opened_ = false;
  bool at_file_start_ = false;
  std::ifstream in_;
};

bool is_blank(const std::string &line);

class DocumentReader {
public:
  DocumentReader(std::vector<std::string> files, std::optional<std::string> separator);
  // False at the end of input; otherwise `doc` is the next non-empty document,
  // its lines joined with '\n' and no trailing newline.
  bool next(std::string *doc);

private:
  bool is_boundary(const std::string &line) const;

  LineReader lines_;
  std::optional<std::string> separator_;
  std::optional<std::string> pending_; // first line of the next file
};

} // namespace llama_tokenize
