// Fuzz target: bytes parsed as a synthgrad.v1.Tensor go through the same
// validation as every tensor from the network. A tensor that passes must
// round-trip unchanged.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/tensor_proto.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  synthgrad::v1::Tensor tensor;
  if (!tensor.ParseFromArray(data, static_cast<int>(size))) return 0;
  synthgrad::TensorLimits limits;
  limits.max_rows = 256;
  absl::StatusOr<synthgrad::Matrix> matrix =
      synthgrad::MatrixFromProto(tensor, limits, "fuzzed tensor");
  if (!matrix.ok()) return 0;

  synthgrad::v1::Tensor round_trip;
  synthgrad::MatrixToProto(*matrix, &round_trip);
  absl::StatusOr<synthgrad::Matrix> again =
      synthgrad::MatrixFromProto(round_trip, limits, "round trip");
  if (!again.ok() || *again != *matrix) std::abort();
  return 0;
}
