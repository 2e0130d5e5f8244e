// The pickle inside a torch.save archive (data.pkl), read without Python:
// exactly the subset torch.save(state_dict) emits, for a dict (or
// OrderedDict) of tensor name -> dense CPU tensor.
//
// torch.save pickles tensors through torch._utils._rebuild_tensor_v2(storage,
// storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
// and refers to each storage by a persistent id ('storage', torch.XStorage,
// key, location, numel) whose bytes live in the archive's data/<key> record
// (torch_zip.h). Storage types float32, float16 and bfloat16 are understood;
// any other global, opcode or object shape is an error naming the file, the
// byte offset and the opcode or global, so an untrusted file can never make
// the reader do more than build this table. Protocols 2 to 4 are accepted
// (torch.save writes 2 by default; pickle_protocol=4 adds FRAME, MEMOIZE,
// STACK_GLOBAL and SHORT_BINUNICODE).
#pragma once
#include "runtime/checkpoint/safetensors.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace llamart::ckpt {

// One storage a tensor views: bytes in the archive's data/<key> record.
struct TorchStorageRef {
  std::string key;   // "0", "1", ...
  StDType dtype;     // F32, F16 or BF16
  int64_t numel = 0; // elements, as the persistent id states
};

// A tensor as torch describes it: a strided view into a storage (elements,
// not bytes). Strides are never negative; the view is checked to lie inside
// the storage and to have no more elements than it (expanded views, which
// torch.save keeps as views, are refused: no checkpoint stores weights so,
// and it bounds what a file can make the reader allocate by its size).
struct TorchTensorRef {
  size_t storage = 0; // index into TorchStateDict::storages
  int64_t offset = 0;
  std::vector<int64_t> shape;
  std::vector<int64_t> stride;
  int64_t numel() const;
  bool is_contiguous() const; // row-major without gaps
};

struct TorchStateDict {
  std::vector<TorchStorageRef> storages;                      // distinct keys
  std::vector<std::pair<std::string, TorchTensorRef>> tensors; // in pickle order
};

// Unpickles `size` bytes of data.pkl. `path` names the archive in errors:
// "<path>: data.pkl byte N: <problem>". The top-level object must be a dict
// or OrderedDict of unique str -> tensor.
TorchStateDict parse_torch_state_dict(const uint8_t *data, size_t size,
                                      const std::string &path);


} // namespace llamart::ckpt
