#include "runtime/checkpoint/torch_pickle.h"

#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <stdexcept>
#include <unordered_map>

namespace llamart::ckpt {

namespace {

// Every object the unpickler builds lives in one arena and is referred to by
// index: the memo and containers share objects the way Python references do
// (SETITEMS on a memoized dict mutates it in place), yet a hostile pickle
// that puts a list inside itself makes an index cycle, not a reference-count
// leak.
enum class Kind : uint8_t { None, Bool, Int, Str, Tuple, List, Dict, Global, Storage, Tensor };

// The only callables and classes a state dict needs.
enum class Global : uint8_t {
  OrderedDict,
  RebuildTensorV2,
  RebuildParameter,
  FloatStorage,
  HalfStorage,
  BFloat16Storage,
};

struct Obj {
  Kind kind = Kind::None;
  int64_t num = 0; // Bool/Int value; Global id; Storage/Tensor index
  std::string text;                                 // Str
  std::vector<size_t> items;                        // Tuple, List
  std::vector<std::pair<size_t, size_t>> entries;   // Dict (key, value) in order
};

const char *kind_name(Kind k) {
  switch (k) {
  case Kind::None: return "None";
  case Kind::Bool: return "bool";
  case Kind::Int: return "int";
  case Kind::Str: return "str";
  case Kind::Tuple: return "tuple";
  case Kind::List: return "list";
  case Kind::Dict: return "dict";
  case Kind::Global: return "global";
  case Kind::Storage: return "storage";
  case Kind::Tensor: return "tensor";
  }
  return "?";
}

bool mul_overflows(int64_t a, int64_t b, int64_t *out) {
  return __builtin_mul_overflow(a, b, out);
}

class Unpickler {
public:
  Unpickler(const uint8_t *data, size_t size, const std::string &path)
      : data_(data), size_(size), path_(path) {}

  TorchStateDict run() {
    while (true) {
      if (pos_ >= size_)
        fail_at(size_, "truncated (no STOP opcode)");
      op_pos_ = pos_;
      const uint8_t op = data_[pos_++];
      if (op == '.') // STOP
        break;
      step(op);
    }
    if (stack_.size() != 1 || !marks_.empty())
      fail("STOP with " + std::to_string(stack_.size()) + " objects on the stack, expected 1");
    return result(stack_.back());
  }

private:
  [[noreturn]] void fail_at(size_t at, const std::string &what) const {
    throw std::runtime_error(path_ + ": data.pkl byte " + std::to_string(at) + ": " + what);
  }
  [[noreturn]] void fail(const std::string &what) const { fail_at(op_pos_, what); }

  // --- reading the byte stream ------------------------------------------------
  const uint8_t *take(size_t n) {
    if (n > size_ - pos_)
      fail("truncated operand (" + std::to_string(n) + " bytes past the end)");
    const uint8_t *p = data_ + pos_;
    pos_ += n;
    return p;
  }
  uint64_t read_le(size_t n) {
    const uint8_t *p = take(n);
    uint64_t v = 0;
    for (size_t i = 0; i < n; ++i)
      v |= uint64_t(p[i]) << (8 * i);
    return v;
  }
  std::string read_line() {
    const void *nl = std::memchr(data_ + pos_, '\n', size_ - pos_);
    if (!nl)
      fail("truncated GLOBAL (no newline)");
    const size_t n = static_cast<const uint8_t *>(nl) - (data_ + pos_);
    std::string s(reinterpret_cast<const char *>(data_ + pos_), n);
    pos_ += n + 1;
    return s;
  }

  // --- objects and the stack ---------------------------------------------------
  size_t make(Obj o) {
    objs_.push_back(std::move(o));
    return objs_.size() - 1;
  }
  size_t make_int(int64_t v) { return make(Obj{Kind::Int, v, {}, {}, {}}); }
  void push(size_t i) { stack_.push_back(i); }
  size_t pop() {
    if (stack_.size() <= floor())
      fail("stack underflow");
    const size_t i = stack_.back();
    stack_.pop_back();
    return i;
  }
  size_t top() {
    if (stack_.size() <= floor())
      fail("stack underflow");
    return stack_.back();
  }
  // Objects above the innermost MARK are the only ones an opcode may pop
  // without popping the mark itself.
  size_t floor() const { return marks_.empty() ? 0 : marks_.back(); }
  std::vector<size_t> pop_mark() {
    if (marks_.empty())
      fail("no MARK to pop to");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<size_t> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  Obj &obj(size_t i) { return objs_[i]; }
  Obj &expect(size_t i, Kind k, const char *what) {
    if (objs_[i].kind != k)
      fail(std::string(what) + " is a " + kind_name(objs_[i].kind) + ", expected a " +
           kind_name(k));
    return objs_[i];
  }

  void memo_put(uint64_t key, size_t value) { memo_[key] = value; }
  size_t memo_get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end())
      fail("memo key " + std::to_string(key) + " was never stored");
    return it->second;
  }

  // --- the opcodes -------------------------------------------------------------
  void step(uint8_t op) {
    switch (op) {
    case 0x80: { // PROTO
      const uint64_t proto = read_le(1);
      if (proto < 2 || proto > 5)
        fail("pickle protocol " + std::to_string(proto) + " (torch.save writes 2 to 5)");
      return;
    }
    case 0x95: { // FRAME: only a hint for buffered readers
      const uint64_t n = read_le(8);
      if (n > size_ - pos_)
        fail("FRAME of " + std::to_string(n) + " bytes runs past the end");
      return;
    }
    case '(': // MARK
      marks_.push_back(stack_.size());
      return;
    case '}': // EMPTY_DICT
      push(make(Obj{Kind::Dict, 0, {}, {}, {}}));
      return;
    case ']': // EMPTY_LIST
      push(make(Obj{Kind::List, 0, {}, {}, {}}));
      return;
    case ')': // EMPTY_TUPLE
      push(make(Obj{Kind::Tuple, 0, {}, {}, {}}));
      return;
    case 'N': // NONE
      push(make(Obj{}));
      return;
    case 0x88: // NEWTRUE
    case 0x89: // NEWFALSE
      push(make(Obj{Kind::Bool, op == 0x88 ? 1 : 0, {}, {}, {}}));
      return;
    case 'K': // BININT1
      push(make_int(static_cast<int64_t>(read_le(1))));
      return;
    case 'M': // BININT2
      push(make_int(static_cast<int64_t>(read_le(2))));
      return;
    case 'J': // BININT: signed 32-bit
      push(make_int(static_cast<int32_t>(static_cast<uint32_t>(read_le(4)))));
      return;
    case 0x8a: { // LONG1: n-byte little-endian two's complement
      const size_t n = read_le(1);
      if (n > 8)
        fail("LONG1 integer of " + std::to_string(n) + " bytes (more than 64 bits)");
      uint64_t v = n ? read_le(n) : 0;
      if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1)
        v |= ~uint64_t(0) << (8 * n); // sign-extend
      push(make_int(static_cast<int64_t>(v)));
      return;
    }
    case 'X': // BINUNICODE
    case 0x8c: { // SHORT_BINUNICODE
      const size_t n = read_le(op == 'X' ? 4 : 1);
      const uint8_t *p = take(n);
      push(make(Obj{Kind::Str, 0, std::string(reinterpret_cast<const char *>(p), n), {}, {}}));
      return;
    }
    case 0x85: // TUPLE1
    case 0x86: // TUPLE2
    case 0x87: { // TUPLE3
      const size_t n = op - 0x84u;
      std::vector<size_t> items(n);
      for (size_t i = n; i-- > 0;)
        items[i] = pop();
      push(make(Obj{Kind::Tuple, 0, {}, std::move(items), {}}));
      return;
    }
    case 't': // TUPLE
      push(make(Obj{Kind::Tuple, 0, {}, pop_mark(), {}}));
      return;
    case 'a': { // APPEND
      const size_t value = pop();
      expect(top(), Kind::List, "APPEND target").items.push_back(value);
      return;
    }
    case 'e': { // APPENDS
      std::vector<size_t> values = pop_mark();
      Obj &list = expect(top(), Kind::List, "APPENDS target");
      list.items.insert(list.items.end(), values.begin(), values.end());
      return;
    }
    case 's': { // SETITEM
      const size_t value = pop();
      const size_t key = pop();
      expect(top(), Kind::Dict, "SETITEM target").entries.emplace_back(key, value);
      return;
    }
    case 'u': { // SETITEMS
      std::vector<size_t> kv = pop_mark();
      if (kv.size() % 2)
        fail("SETITEMS with an odd number of objects");
      Obj &dict = expect(top(), Kind::Dict, "SETITEMS target");
      for (size_t i = 0; i < kv.size(); i += 2)
        dict.entries.emplace_back(kv[i], kv[i + 1]);
      return;
    }
    case 'q': // BINPUT
      memo_put(read_le(1), top());
      return;
    case 'r': // LONG_BINPUT
      memo_put(read_le(4), top());
      return;
    case 0x94: // MEMOIZE
      memo_put(memo_.size(), top());
      return;
    case 'h': // BINGET
      push(memo_get(read_le(1)));
      return;
    case 'j': // LONG_BINGET
      push(memo_get(read_le(4)));
      return;
    case 'c': { // GLOBAL "module\nname\n"
      const std::string module = read_line();
      const std::string name = read_line();
      push(make_global(module, name));
      return;
    }
    case 0x93: { // STACK_GLOBAL
      const size_t name = pop();
      const size_t module = pop();
      // Copies: make_global grows the arena the references point into.
      push(make_global(expect(module, Kind::Str, "STACK_GLOBAL module").text,
                       expect(name, Kind::Str, "STACK_GLOBAL name").text));
      return;
    }
    case 'Q': // BINPERSID
      push(persistent_load(pop()));
      return;
    case 'R': { // REDUCE
      const size_t args = pop();
      const size_t callable = pop();
      push(reduce(callable, args));
      return;
    }
    case 'b': { // BUILD: object state (a tensor's Python attributes, an
                // OrderedDict's _metadata) that a weight reader has no use for
      pop();
      const Kind k = obj(top()).kind;
      if (k != Kind::Tensor && k != Kind::Dict)
        fail(std::string("BUILD on a ") + kind_name(k) + " (only tensors and dicts)");
      return;
    }
    default:
      break;
    }
    char shown[48];
    if (op >= 0x20 && op < 0x7f)
      std::snprintf(shown, sizeof shown, "0x%02x ('%c')", op, op);
    else
      std::snprintf(shown, sizeof shown, "0x%02x", op);
    fail(std::string("unsupported pickle opcode ") + shown +
         " (not one torch.save uses for a state dict)");
  }

  size_t make_global(std::string module, std::string name) {
    static const std::map<std::string, Global> known = {
        {"collections.OrderedDict", Global::OrderedDict},
        {"torch._utils._rebuild_tensor_v2", Global::RebuildTensorV2},
        {"torch._utils._rebuild_parameter", Global::RebuildParameter},
        {"torch.FloatStorage", Global::FloatStorage},
        {"torch.HalfStorage", Global::HalfStorage},
        {"torch.BFloat16Storage", Global::BFloat16Storage},
    };
    const std::string full = module + "." + name;
    auto it = known.find(full);
    if (it == known.end())
      fail("unsupported global " + full +
           " (a state dict of float32, float16 or bfloat16 tensors needs only "
           "OrderedDict, _rebuild_tensor_v2 and Float/Half/BFloat16Storage)");
    return make(Obj{Kind::Global, static_cast<int64_t>(it->second), full, {}, {}});
  }

  // pid = ('storage', torch.XStorage, key, location, numel)
  size_t persistent_load(size_t pid_index) {
    const Obj &pid = expect(pid_index, Kind::Tuple, "persistent id");
    if (pid.items.size() != 5)
      fail("persistent id has " + std::to_string(pid.items.size()) +
           " fields, expected ('storage', type, key, location, numel)");
    if (expect(pid.items[0], Kind::Str, "persistent id tag").text != "storage")
      fail("persistent id tag '" + obj(pid.items[0]).text + "', expected 'storage'");
    const Obj &type = expect(pid.items[1], Kind::Global, "storage type");
    StDType dtype;
    switch (static_cast<Global>(type.num)) {
    case Global::FloatStorage: dtype = StDType::F32; break;
    case Global::HalfStorage: dtype = StDType::F16; break;
    case Global::BFloat16Storage: dtype = StDType::BF16; break;
    default: fail("storage type " + type.text + " is not a storage class");
    }
    const std::string key = expect(pid.items[2], Kind::Str, "storage key").text;
    expect(pid.items[3], Kind::Str, "storage location");
    const int64_t numel = expect(pid.items[4], Kind::Int, "storage size").num;
    if (numel < 0)
      fail("storage " + key + " has negative size " + std::to_string(numel));
    int64_t bytes;
    if (mul_overflows(numel, static_cast<int64_t>(dtype_bytes(dtype)), &bytes))
      fail("storage " + key + " size overflows");

    auto it = storage_by_key_.find(key);
    size_t index;
    if (it == storage_by_key_.end()) {
      index = storages_.size();
      storages_.push_back({key, dtype, numel});
      storage_by_key_.emplace(key, index);
    } else {
      index = it->second;
      const TorchStorageRef &seen = storages_[index];
      if (seen.dtype != dtype || seen.numel != numel)
        fail("storage " + key + " is referenced with two different types or sizes");
    }
    return make(Obj{Kind::Storage, static_cast<int64_t>(index), {}, {}, {}});
  }

  std::vector<int64_t> int_tuple(size_t index, const char *what) {
    const Obj &t = expect(index, Kind::Tuple, what);
    std::vector<int64_t> out;
    out.reserve(t.items.size());
    for (size_t i : t.items) {
      const int64_t v = expect(i, Kind::Int, what).num;
      if (v < 0)
        fail(std::string(what) + " holds a negative value " + std::to_string(v));
      out.push_back(v);
    }
    return out;
  }

  size_t reduce(size_t callable_index, size_t args_index) {
    const Obj &callable = expect(callable_index, Kind::Global, "REDUCE callable");
    const std::vector<size_t> args = expect(args_index, Kind::Tuple, "REDUCE arguments").items;
    switch (static_cast<Global>(callable.num)) {
    case Global::OrderedDict:
      if (!args.empty())
        fail("OrderedDict called with arguments (torch.save passes none)");
      return make(Obj{Kind::Dict, 0, {}, {}, {}});
    case Global::RebuildParameter: // (data, requires_grad, backward_hooks)
      if (args.size() != 3)
        fail("_rebuild_parameter takes 3 arguments, got " + std::to_string(args.size()));
      expect(args[0], Kind::Tensor, "_rebuild_parameter data");
      return args[0];
    case Global::RebuildTensorV2:
      return rebuild_tensor(args);
    default:
      fail("REDUCE on " + callable.text + ", which is not a function torch.save calls");
    }
  }

  // _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
  //                    backward_hooks[, metadata])
  size_t rebuild_tensor(const std::vector<size_t> &args) {
    if (args.size() != 6 && args.size() != 7)
      fail("_rebuild_tensor_v2 takes 6 or 7 arguments, got " + std::to_string(args.size()));
    TorchTensorRef t;
    t.storage = static_cast<size_t>(expect(args[0], Kind::Storage, "tensor storage").num);
    t.offset = expect(args[1], Kind::Int, "tensor storage offset").num;
    if (t.offset < 0)
      fail("tensor storage offset " + std::to_string(t.offset) + " is negative");
    t.shape = int_tuple(args[2], "tensor size");
    t.stride = int_tuple(args[3], "tensor stride");
    if (t.shape.size() != t.stride.size())
      fail("tensor size and stride have different lengths");
    expect(args[4], Kind::Bool, "requires_grad");
    expect(args[5], Kind::Dict, "backward_hooks");

    // The view must lie inside its storage: the last element it touches is
    // offset + sum((size - 1) * stride).
    const TorchStorageRef &storage = storages_[t.storage];
    int64_t numel = 1, last = t.offset;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      if (mul_overflows(numel, t.shape[d], &numel))
        fail("tensor size overflows");
    }
    // More elements than the storage holds means overlapping strides (an
    // expanded view): never a weight, and the one way a small file could
    // ask for a huge allocation.
    if (numel > storage.numel)
      fail("tensor of " + std::to_string(numel) + " elements views storage " + storage.key +
           " of " + std::to_string(storage.numel) + " (an expanded view, not a weight)");
    if (numel > 0) {
      for (size_t d = 0; d < t.shape.size(); ++d) {
        int64_t reach;
        if (mul_overflows(t.shape[d] - 1, t.stride[d], &reach) ||
            __builtin_add_overflow(last, reach, &last))
          fail("tensor view overflows");
      }
      if (last >= storage.numel)
        fail("tensor view reaches element " + std::to_string(last) + " of storage " +
             storage.key + ", which has " + std::to_string(storage.numel));
    }
    tensors_.push_back(std::move(t));
    return make(Obj{Kind::Tensor, static_cast<int64_t>(tensors_.size() - 1), {}, {}, {}});
  }

  TorchStateDict result(size_t root) {
    const Obj &dict = objs_[root];
    if (dict.kind != Kind::Dict)
      fail_at(size_, std::string("the pickled object is a ") + kind_name(dict.kind) +
                         ", expected a state dict (name -> tensor)");
    TorchStateDict out;
    std::set<std::string> seen;
    for (const auto &[k, v] : dict.entries) {
      if (objs_[k].kind != Kind::Str)
        fail_at(size_, std::string("state dict key is a ") + kind_name(objs_[k].kind) +
                           ", expected a str");
      const std::string &name = objs_[k].text;
      if (objs_[v].kind != Kind::Tensor)
        fail_at(size_, "state dict entry " + name + " is a " + kind_name(objs_[v].kind) +
                           ", expected a tensor");
      if (!seen.insert(name).second)
        fail_at(size_, "state dict key " + name + " appears twice");
      out.tensors.emplace_back(name, tensors_[static_cast<size_t>(objs_[v].num)]);
    }
    out.storages = std::move(storages_);
    return out;
  }

  const uint8_t *data_;
  size_t size_;
  const std::string &path_;
  size_t pos_ = 0;
  size_t op_pos_ = 0;
  std::vector<Obj> objs_;
  std::vector<size_t> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, size_t> memo_;
  std::vector<TorchStorageRef> storages_;
  std::unordered_map<std::string, size_t> storage_by_key_;
  std::vector<TorchTensorRef> tensors_;
};

} // namespace

int64_t TorchTensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d; // checked against overflow when parsed
  return n;
}

bool TorchTensorRef::is_contiguous() const {
  int64_t expected = 1;
  for (size_t d = shape.size(); d-- > 0;) {
    if (shape[d] != 1 && stride[d] != expected)
      return false;
    expected *= shape[d];
  }
  return true;
}

TorchStateDict parse_torch_state_dict(const uint8_t *data, size_t size,
                                      const std::string &path) {
  return Unpickler(data, size, path).run();
}

} // namespace llamart::ckpt
