// Image classification data in the IDX format of MNIST and Fashion-MNIST,
// and the per-epoch batch order shared by the coordinator and the in-process
// trainer.
#ifndef SYNTHGRAD_COMMON_DATASET_H_
#define SYNTHGRAD_COMMON_DATASET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/tensor.h"

namespace synthgrad {

struct Dataset {
  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  int64_t input_dim() const { return pixels_per_example; }

  // Raw pixels, example after example, pixels_per_example bytes each.
  std::vector<uint8_t> pixels;
  int64_t pixels_per_example = 0;
  std::vector<int32_t> labels;
};

struct TrainTestData {
  Dataset train;
  Dataset test;
};

// Reads a gzip-compressed IDX image file (magic 0x00000803) and its label
// file (magic 0x00000801), keeping the first `limit` examples (all when
// `limit` is 0). Fails with NOT_FOUND for a missing file, DATA_LOSS for a
// corrupt or truncated one or a label outside [0, 9], naming the path, and
// INVALID_ARGUMENT when the two files disagree on the example count.
absl::StatusOr<Dataset> LoadIdx(const std::string& images_path,
                                const std::string& labels_path, int64_t limit);

// Loads train-{images,labels} and t10k-{images,labels} from `dir`.
absl::StatusOr<TrainTestData> LoadFashionMnist(const std::string& dir,
                                               int64_t train_limit,
                                               int64_t test_limit);

// Returns the order of examples [0, n) for `epoch`: a permutation drawn from
// a generator seeded with `seed` and `epoch`, the same on every run.
std::vector<int64_t> EpochOrder(int64_t n, uint64_t seed, int epoch);

// Copies the examples at `indices` into x [k, input_dim], pixels scaled to
// [0, 1], and their labels into `labels`.
void GatherBatch(const Dataset& data, absl::Span<const int64_t> indices,
                 Matrix* x, std::vector<int32_t>* labels);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_DATASET_H_
