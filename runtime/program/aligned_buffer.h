// A zero-initialized, 64-byte-aligned heap array: parameters, gradients,
// optimizer state and the step arenas. Generated step functions may assume
// cache-line alignment of every buffer the runtime hands them.
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>

namespace llamart {

template <typename T> class AlignedBuffer {
public:
  static constexpr size_t kAlignment = 64;

  AlignedBuffer() = default;
  explicit AlignedBuffer(size_t count) : size_(count) {
    // aligned_alloc requires a size that is a multiple of the alignment, and
    // a zero-byte arena still has to be a valid distinct pointer.
    size_t bytes = count * sizeof(T);
    bytes = (bytes + kAlignment - 1) / kAlignment * kAlignment;
    if (bytes == 0)
      bytes = kAlignment;
    void *p = std::aligned_alloc(kAlignment, bytes);
    if (!p)
      throw std::bad_alloc();
    std::memset(p, 0, bytes);
    data_.reset(static_cast<T *>(p));
  }

  T *data() { return data_.get(); }
  const T *data() const { return data_.get(); }
  size_t size() const { return size_; }
  T &operator[](size_t i) { return data_.get()[i]; }
  const T &operator[](size_t i) const { return data_.get()[i]; }

private:
  struct Free {
    void operator()(T *p) const { std::free(p); }
  };
  std::unique_ptr<T, Free> data_;
  size_t size_ = 0;
};

} // namespace llamart
