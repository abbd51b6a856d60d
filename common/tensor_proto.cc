#include "common/tensor_proto.h"

#include <algorithm>
#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace synthgrad {
namespace {

std::string ProtoShapeString(const v1::Tensor& proto) {
  return absl::StrCat("[", absl::StrJoin(proto.shape(), ", "), "]");
}

}  // namespace

absl::StatusOr<Matrix> MatrixFromProto(const v1::Tensor& proto,
                                       const TensorLimits& limits,
                                       absl::string_view what) {
  if (proto.shape_size() != 2) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " must have rank 2 [rows, cols], got shape ",
                     ProtoShapeString(proto)));
  }
  const int64_t rows = proto.shape(0);
  const int64_t cols = proto.shape(1);
  if (rows <= 0 || cols <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has a non-positive dimension in shape ",
                     ProtoShapeString(proto)));
  }
  if (limits.cols >= 0 && cols != limits.cols) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", cols, " columns, expected ", limits.cols));
  }
  if (limits.rows >= 0 && rows != limits.rows) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has ", rows, " rows, expected ", limits.rows));
  }
  if (rows > limits.max_rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has ", rows, " rows, above the limit of ", limits.max_rows));
  }
  // Comparing each factor first keeps the product below 2^62, so a hostile
  // shape cannot overflow it.
  const int64_t size = proto.data_size();
  if (rows > size || cols > size || rows * cols != size) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " shape ", ProtoShapeString(proto), " needs ",
                     rows, " x ", cols, " values, got ", size));
  }

  const float* data = proto.data().data();
  const float* bad = std::find_if(data, data + proto.data_size(),
                                  [](float v) { return !std::isfinite(v); });
  if (bad != data + proto.data_size()) {
    const int64_t index = bad - data;
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has a non-finite value ", *bad, " at row ",
                     index / cols, ", column ", index % cols));
  }

  return Matrix(Eigen::Map<const Matrix>(data, rows, cols));
}

void MatrixToProto(const Matrix& m, v1::Tensor* proto) {
  proto->Clear();
  proto->add_shape(m.rows());
  proto->add_shape(m.cols());
  proto->mutable_data()->Resize(static_cast<int>(m.size()), 0.0f);
  std::copy(m.data(), m.data() + m.size(), proto->mutable_data()->begin());
}

absl::StatusOr<std::vector<Matrix>> ParametersFromProto(
    const google::protobuf::RepeatedPtrField<v1::Tensor>& tensors,
    const std::vector<Matrix>& like, absl::string_view what) {
  if (static_cast<size_t>(tensors.size()) != like.size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", like.size(), " tensors for the ", what, "s, got ",
        tensors.size()));
  }
  std::vector<Matrix> matrices;
  matrices.reserve(like.size());
  for (size_t i = 0; i < like.size(); ++i) {
    TensorLimits limits;
    limits.rows = like[i].rows();
    limits.cols = like[i].cols();
    limits.max_rows = like[i].rows();
    absl::StatusOr<Matrix> matrix = MatrixFromProto(
        tensors[static_cast<int>(i)], limits, absl::StrCat(what, " ", i));
    if (!matrix.ok()) return matrix.status();
    matrices.push_back(*std::move(matrix));
  }
  return matrices;
}

}  // namespace synthgrad
