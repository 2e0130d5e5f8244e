// TensorBoard event files without TensorFlow or protobuf: --tensorboard
// writes <run-dir>/tensorboard/events.out.tfevents.<unix time>.<host>.
//
// The file is a TFRecord stream: each record is
//   uint64 length (little endian), uint32 masked_crc32c(length bytes),
//   data, uint32 masked_crc32c(data),
// and each data is a tensorflow.Event protobuf encoded by hand:
//   wall_time (double, field 1), step (int64, field 2),
//   file_version (string, field 3: "brain.Event:2", the first record),
//   summary (Summary, field 5) = repeated Value (field 1) {tag (string,
//   field 1), simple_value (float, field 2)}.
// Every record is flushed when written, so a crash keeps all but the one
// being written. A resumed run writes a new file; TensorBoard merges the
// files of a directory.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

namespace llamart::observe {

// CRC-32C (Castagnoli, reflected 0x82F63B78): crc32c("123456789") =
// 0xE3069283.
uint32_t crc32c(const void *data, size_t n);

// TFRecord's masking, so that a CRC over data holding CRCs stays strong:
// rotate right by 15, add 0xA282EAD8.
uint32_t masked_crc32c(const void *data, size_t n);

// Protobuf base-128 varint of `v`, appended to `out`.
void append_varint(std::string &out, uint64_t v);

// One TFRecord around `data`.
std::string tfrecord(const std::string &data);

// The Event protobufs.
std::string event_file_version(double wall_time);
std::string event_scalars(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>> &values);

class EventWriter {
public:
  // Creates `dir` and a new event file in it; throws std::runtime_error
  // naming the path.
  explicit EventWriter(const std::string &dir);
  ~EventWriter();
  EventWriter(const EventWriter &) = delete;
  EventWriter &operator=(const EventWriter &) = delete;

  // One Event with a Summary of every (tag, value); throws on a write error.
  void scalars(int64_t step, const std::vector<std::pair<std::string, float>> &values);
  const std::string &path() const { return path_; }

private:
  void write(const std::string &event);
  std::string path_;
  std::FILE *file_ = nullptr;
};

} // namespace llamart::observe
