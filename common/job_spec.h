// Checks on a synthgrad.v1.JobSpec and the values derived from it.
#ifndef SYNTHGRAD_COMMON_JOB_SPEC_H_
#define SYNTHGRAD_COMMON_JOB_SPEC_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

// Upper bound on batch_size; a Forward request with more rows is rejected.
inline constexpr int kMaxBatchSize = 8192;
// Upper bound on a layer's width, input_dim and num_classes.
inline constexpr int kMaxUnits = 1 << 16;
// Upper bound on the parameters of one group, and separately of its
// synthetic-gradient model: 2^26 floats are 256 MiB, about 1 GiB with Adam's
// two moments and the gradients.
inline constexpr int64_t kMaxParametersPerGroup = int64_t{1} << 26;
// Upper bound on the floats one batch's forward trace keeps in a group:
// batch_size times the sum of the group's input and layer widths. 2^26
// floats are 256 MiB.
inline constexpr int64_t kMaxActivationFloatsPerBatch = int64_t{1} << 26;
// Upper bound on the floats of one tensor on the wire, batch_size times a
// boundary width, so every message stays below the 64 MiB gRPC limit of
// services/server_util.h with room for the rest of the message.
inline constexpr int64_t kMaxTensorFloats = int64_t{15} << 20;
// Upper bound on cache_capacity.
inline constexpr int kMaxCacheCapacity = 1024;

// Replaces the zero values that mean "default" with the defaults documented in
// synthgrad.proto, and forces max_in_flight to 1 in backprop mode.
void ApplyJobDefaults(v1::JobSpec* spec);

// Checks that the spec describes a trainable job. That means a known mode,
// at least one group, distinct group addresses, and layers whose widths
// chain from input_dim to num_classes. It also needs valid optimizers, a
// synthetic-gradient spec for DNI and cDNI, positive sizes and the limits
// above. Allocates no layer, so an absurd
// spec costs nothing. Call after ApplyJobDefaults. Fails with
// INVALID_ARGUMENT naming the field and value.
absl::Status ValidateJobSpec(const v1::JobSpec& spec);

// Input width of group `index`: input_dim for group 0, otherwise the output
// width of group index - 1. The spec must be valid.
int GroupInputDim(const v1::JobSpec& spec, int index);

// Output width of group `index`. The spec must be valid.
int GroupOutputDim(const v1::JobSpec& spec, int index);

// Parses a JobSpec from Protobuf text format. Fails with INVALID_ARGUMENT
// carrying the parser's line and column.
absl::StatusOr<v1::JobSpec> ParseJobSpec(const std::string& text);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_JOB_SPEC_H_
