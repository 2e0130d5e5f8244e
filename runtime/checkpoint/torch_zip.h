// Reading what torch.save writes (PyTorch >= 1.6): a zip archive whose
// records all sit under one folder named after the file,
//
//   consolidated.00/data.pkl     the pickled object (torch_pickle.h)
//   consolidated.00/data/0       storage "0": its elements, raw
//   consolidated.00/data/1 ...
//   consolidated.00/byteorder    "little" or "big" (PyTorch >= 2.0; absent
//                                means little-endian)
//   consolidated.00/version      serialization format version
//
// PyTorch's writer (miniz) stores every record uncompressed, pads local
// headers so data is 64-byte aligned, puts sizes and CRC-32s in the central
// directory (local headers use data descriptors) and switches to zip64 past
// 4 GiB; all of that is read here. A compressed or encrypted record (an
// archive re-zipped by another tool) is an error, as is anything that does
// not add up: every offset and size is checked against the file before it
// is used, so a hostile file fails with "<path>: <problem>" and nothing else.
#pragma once
#include "runtime/checkpoint/safetensors.h"
#include "runtime/checkpoint/torch_pickle.h"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace llamart::ckpt {

// The records of a torch.save zip archive, read with pread (the file stays
// open for the archive's lifetime; reads from several threads are safe).
class TorchArchive {
public:
  explicit TorchArchive(const std::string &path);
  ~TorchArchive();
  TorchArchive(const TorchArchive &) = delete;
  TorchArchive &operator=(const TorchArchive &) = delete;

  const std::string &path() const { return path_; }
  // The folder every record sits under ("consolidated.00").
  const std::string &folder() const { return folder_; }
  // Record names are relative to folder(): "data.pkl", "data/0".
  bool has(const std::string &record) const;
  uint64_t size(const std::string &record) const;
  // Reads a whole record into `dest` (size(record) bytes) and checks its
  // CRC-32 (a CRC of 0 means the writer skipped it: torch's
  // set_crc32_options(False)). Throws naming the archive and the record.
  void read(const std::string &record, void *dest) const;
  std::string read_string(const std::string &record) const;
  // Bytes [offset, offset + n) of a record, unchecked: pair with verify().
  void read_range(const std::string &record, uint64_t offset, uint64_t n, void *dest) const;
  // Streams a record through its CRC-32 check without keeping it.
  void verify(const std::string &record) const;

private:
  struct Record {
    uint64_t data_offset; // of the bytes, past the local header
    uint64_t size;
    uint32_t crc32;
  };
  const Record &find(const std::string &record) const;

  std::string path_;
  std::string folder_;
  int fd_ = -1;
  uint64_t file_size_ = 0;
  std::map<std::string, Record> records_;
};

// A torch.save(state_dict) file: the archive plus its unpickled tensor table.
class TorchFile {
public:
  // Opens the archive, unpickles data.pkl and checks every storage against
  // its data/<key> record. Throws "<path>: <problem>".
  explicit TorchFile(const std::string &path);

  const std::string &path() const { return archive_.path(); }
  const TorchStateDict &state_dict() const { return dict_; }
  size_t num_tensors() const { return dict_.tensors.size(); }
  const std::string &name(size_t i) const { return dict_.tensors[i].first; }
  const TorchTensorRef &ref(size_t i) const { return dict_.tensors[i].second; }
  StDType dtype(size_t i) const { return dict_.storages[ref(i).storage].dtype; }
  // Index of tensor `name`, if the file has it.
  std::optional<size_t> find(const std::string &name) const;
  // Tensor i as a contiguous row-major little-endian Tensor of its storage's
  // dtype, whatever its strides and offset. Safe to call from several
  // threads.
  Tensor read(size_t i) const;

private:
  TorchArchive archive_;
  TorchStateDict dict_;
  bool big_endian_ = false;
  std::map<std::string, size_t> by_name_;
  // Storages whose CRC-32 has been checked: views into one storage (a
  // flattened parameter buffer) check it once, then read only their span.
  std::unique_ptr<std::atomic<bool>[]> verified_;
};

} // namespace llamart::ckpt
