#include "tools/llama-tokenize/documents.h"

#include <stdexcept>

namespace llama_tokenize {

LineReader::LineReader(std::vector<std::string> files) : files_(std::move(files)) {}

const std::string &LineReader::current_file() const {
  static const std::string none;
  return index_ < files_.size() ? files_[index_] : none;
}

bool LineReader::open_next() {
  while (index_ < files_.size()) {
    if (!opened_) {
      in_ = std::ifstream(files_[index_], std::ios::binary);
      if (!in_)
        throw std::runtime_error(files_[index_] + ": cannot open for reading");
      opened_ = true;
      at_file_start_ = true;
      return true;
    }
    if (in_.good())
      return true;
    if (in_.bad())
      throw std::runtime_error(files_[index_] + ": read error");
    ++index_;
    opened_ = false;
  }
  return false;
}

bool LineReader::next(std::string *line, bool *new_file) {
  while (open_next()) {
    if (std::getline(in_, *line)) {
      if (!line->empty() && line->back() == '\r')
        line->pop_back();
      if (new_file)
        *new_file = at_file_start_;
      at_file_start_ = false;
      return true;
    }
    if (in_.bad())
      throw std::runtime_error(files_[index_] + ": read error");
    in_.clear(std::ios::eofbit); // exhausted: open_next moves on
  }
  return false;
}

bool is_blank(const std::string &line) {
  return line.find_first_not_of(" \t\f\v") == std::string::npos;
}

DocumentReader::DocumentReader(std::vector<std::string> files,
                               std::optional<std::string> separator)
    : lines_(std::move(files)), separator_(std::move(separator)) {}

bool DocumentReader::is_boundary(const std::string &line) const {
  return separator_ ? line == *separator_ : is_blank(line);
}

bool DocumentReader::next(std::string *doc) {
  doc->clear();
  // Blank lines seen since the last content line, kept verbatim (a line of
  // tabs inside a fortune is art) but only if more content follows, which
  // trims trailing blank lines.
  std::string held_blank;
  std::string line;
  bool new_file = false;
  for (;;) {
    if (pending_) {
      line = std::move(*pending_);
      pending_.reset();
      new_file = false;
    } else if (!lines_.next(&line, &new_file)) {
      break;
    }
    if (new_file && !doc->empty()) {
      pending_ = std::move(line); // a file boundary ends the document
      return true;
    }
    if (is_boundary(line)) {
      if (!doc->empty())
        return true;
      continue;
    }
    if (is_blank(line)) { // only reached with a separator: blank lines are content
      if (!doc->empty()) {
        held_blank += '\n';
        held_blank += line;
      }
      continue;
    }
    if (!doc->empty()) {
      doc->append(held_blank);
      doc->push_back('\n');
      held_blank.clear();
    }
    doc->append(line);
  }
  return !doc->empty();
}

} // namespace llama_tokenize
