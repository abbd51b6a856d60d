#include "common/dataset.h"

#include <zlib.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace synthgrad {
namespace {

constexpr uint32_t kImageMagic = 0x00000803;
constexpr uint32_t kLabelMagic = 0x00000801;
constexpr int kNumClasses = 10;
// Headers declaring more than this are rejected as corrupt before any
// allocation: 2^30 bytes of pixels is 20 times Fashion-MNIST's training set.
constexpr uint64_t kMaxExamples = 10'000'000;
constexpr uint64_t kMaxPixelsPerExample = 1 << 20;
constexpr uint64_t kMaxPixelBytes = uint64_t{1} << 30;
// Buffers grow by at most this much ahead of the data actually read, so a
// truncated file costs no more memory than its content.
constexpr uint64_t kReadChunkBytes = 16 << 20;

struct GzCloser {
  void operator()(gzFile file) const { gzclose(file); }
};
using GzFile = std::unique_ptr<gzFile_s, GzCloser>;

absl::StatusOr<GzFile> OpenGz(const std::string& path) {
  gzFile file = gzopen(path.c_str(), "rb");
  if (file == nullptr) {
    const int error = errno;
    if (error == ENOENT) {
      return absl::NotFoundError(absl::StrCat(
          "data file ", path, " not found; install dataset-fashion-mnist or "
          "set data.dir in the job spec"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot open data file ", path, ": ", std::strerror(error)));
  }
  return GzFile(file);
}

absl::Status ReadExact(gzFile file, const std::string& path, void* out,
                       uint64_t bytes) {
  auto* cursor = static_cast<uint8_t*>(out);
  while (bytes > 0) {
    const unsigned chunk =
        static_cast<unsigned>(std::min<uint64_t>(bytes, 1u << 30));
    const int got = gzread(file, cursor, chunk);
    if (got <= 0) {
      int zlib_error = Z_OK;
      const char* message = gzerror(file, &zlib_error);
      return absl::DataLossError(absl::StrCat(
          "data file ", path, " is truncated or corrupt: ",
          got == 0 ? "unexpected end of file" : message));
    }
    cursor += got;
    bytes -= static_cast<uint64_t>(got);
  }
  return absl::OkStatus();
}

absl::StatusOr<uint32_t> ReadBigEndian32(gzFile file, const std::string& path) {
  uint8_t bytes[4];
  absl::Status status = ReadExact(file, path, bytes, sizeof(bytes));
  if (!status.ok()) return status;
  return (uint32_t{bytes[0]} << 24) | (uint32_t{bytes[1]} << 16) |
         (uint32_t{bytes[2]} << 8) | uint32_t{bytes[3]};
}

// Reads the header of an IDX file: the magic number, then one size per
// dimension.
absl::StatusOr<std::vector<uint32_t>> ReadHeader(gzFile file,
                                                 const std::string& path,
                                                 uint32_t magic, int rank) {
  absl::StatusOr<uint32_t> found = ReadBigEndian32(file, path);
  if (!found.ok()) return found.status();
  if (*found != magic) {
    return absl::DataLossError(absl::StrCat(
        "data file ", path, " has IDX magic 0x", absl::Hex(*found, absl::kZeroPad8),
        ", expected 0x", absl::Hex(magic, absl::kZeroPad8)));
  }
  std::vector<uint32_t> dims;
  for (int i = 0; i < rank; ++i) {
    absl::StatusOr<uint32_t> dim = ReadBigEndian32(file, path);
    if (!dim.ok()) return dim.status();
    dims.push_back(*dim);
  }
  return dims;
}

}  // namespace

absl::StatusOr<Dataset> LoadIdx(const std::string& images_path,
                                const std::string& labels_path, int64_t limit) {
  absl::StatusOr<GzFile> images = OpenGz(images_path);
  if (!images.ok()) return images.status();
  absl::StatusOr<GzFile> labels = OpenGz(labels_path);
  if (!labels.ok()) return labels.status();

  absl::StatusOr<std::vector<uint32_t>> image_dims =
      ReadHeader(images->get(), images_path, kImageMagic, 3);
  if (!image_dims.ok()) return image_dims.status();
  absl::StatusOr<std::vector<uint32_t>> label_dims =
      ReadHeader(labels->get(), labels_path, kLabelMagic, 1);
  if (!label_dims.ok()) return label_dims.status();

  const uint64_t count = (*image_dims)[0];
  const uint64_t pixels = uint64_t{(*image_dims)[1]} * (*image_dims)[2];
  if (count > kMaxExamples || pixels == 0 || pixels > kMaxPixelsPerExample ||
      count * pixels > kMaxPixelBytes) {
    return absl::DataLossError(absl::StrCat(
        "data file ", images_path, " declares an implausible shape ", count,
        " x ", (*image_dims)[1], " x ", (*image_dims)[2]));
  }
  if ((*label_dims)[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat(
        images_path, " has ", count, " images but ", labels_path, " has ",
        (*label_dims)[0], " labels"));
  }

  const uint64_t kept =
      limit > 0 ? std::min<uint64_t>(count, static_cast<uint64_t>(limit)) : count;
  Dataset data;
  data.pixels_per_example = static_cast<int64_t>(pixels);
  const uint64_t total = kept * pixels;
  absl::Status status;
  while (data.pixels.size() < total) {
    const uint64_t start = data.pixels.size();
    const uint64_t chunk = std::min(kReadChunkBytes, total - start);
    data.pixels.resize(start + chunk);
    status = ReadExact(images->get(), images_path, data.pixels.data() + start, chunk);
    if (!status.ok()) return status;
  }

  std::vector<uint8_t> raw_labels(kept);
  status = ReadExact(labels->get(), labels_path, raw_labels.data(), kept);
  if (!status.ok()) return status;
  data.labels.reserve(kept);
  for (uint64_t i = 0; i < kept; ++i) {
    if (raw_labels[i] >= kNumClasses) {
      return absl::DataLossError(absl::StrCat(
          "data file ", labels_path, " has label ", int{raw_labels[i]},
          " at index ", i, "; expected 0 to ", kNumClasses - 1));
    }
    data.labels.push_back(raw_labels[i]);
  }
  return data;
}

absl::StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir,
                                               int64_t train_limit,
                                               int64_t test_limit) {
  TrainTestData data;
  absl::StatusOr<Dataset> train =
      LoadIdx(absl::StrCat(dir, "/train-images-idx3-ubyte.gz"),
              absl::StrCat(dir, "/train-labels-idx1-ubyte.gz"), train_limit);
  if (!train.ok()) return train.status();
  absl::StatusOr<Dataset> test =
      LoadIdx(absl::StrCat(dir, "/t10k-images-idx3-ubyte.gz"),
              absl::StrCat(dir, "/t10k-labels-idx1-ubyte.gz"), test_limit);
  if (!test.ok()) return test.status();
  if (train->input_dim() != test->input_dim()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "train images have ", train->input_dim(), " pixels but test images have ",
        test->input_dim(), " in ", dir));
  }
  data.train = *std::move(train);
  data.test = *std::move(test);
  return data;
}

std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int epoch) {
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::seed_seq seq{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32),
                    static_cast<uint32_t>(epoch)};
  std::mt19937_64 rng(seq);
  // Fisher-Yates written out, because std::shuffle's draws are not specified
  // by the standard and could differ between standard libraries.
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = static_cast<int64_t>(rng() % static_cast<uint64_t>(i + 1));
    std::swap(order[i], order[j]);
  }
  return order;
}

void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices,
                 Matrix* x, std::vector<int32_t>* labels) {
  const int64_t width = data.pixels_per_example;
  x->resize(static_cast<Eigen::Index>(indices.size()), width);
  labels->clear();
  labels->reserve(indices.size());
  for (size_t row = 0; row < indices.size(); ++row) {
    const uint8_t* source = data.pixels.data() + indices[row] * width;
    for (int64_t col = 0; col < width; ++col) {
      (*x)(static_cast<Eigen::Index>(row), col) = source[col] * (1.0f / 255.0f);
    }
    labels->push_back(data.labels[indices[row]]);
  }
}

}  // namespace synthgrad
