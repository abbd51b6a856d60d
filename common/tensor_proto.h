// Conversion between synthgrad.v1.Tensor and Matrix, with the validation every
// tensor from the network goes through before it reaches Eigen.
#ifndef SYNTHGRAD_COMMON_TENSOR_PROTO_H_
#define SYNTHGRAD_COMMON_TENSOR_PROTO_H_

#include <cstdint>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

// Limits a tensor from the network must satisfy.
struct TensorLimits {
  // Exact column count required, or -1 for any.
  int64_t cols = -1;
  // Exact row count required, or -1 for any row count in [1, max_rows].
  int64_t rows = -1;
  int64_t max_rows = 1 << 16;
};

// Converts `proto` to a Matrix. Fails with INVALID_ARGUMENT, naming `what`
// and the offending value, when the rank is not 2, a dimension is not
// positive or breaks `limits`, the data length differs from the shape's
// product, or an entry is NaN or infinite.
absl::StatusOr<Matrix> MatrixFromProto(const v1::Tensor& proto,
                                       const TensorLimits& limits,
                                       absl::string_view what);

// Writes `m` into `proto`, replacing its contents.
void MatrixToProto(const Matrix& m, v1::Tensor* proto);

// Converts a list of tensors that must match `like` in count and in the
// shape of each entry, as when restoring parameters from a checkpoint.
// Fails with INVALID_ARGUMENT naming `what` and the index.
absl::StatusOr<std::vector<Matrix>> ParametersFromProto(
    const google::protobuf::RepeatedPtrField<v1::Tensor>& tensors,
    const std::vector<Matrix>& like, absl::string_view what);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_TENSOR_PROTO_H_
