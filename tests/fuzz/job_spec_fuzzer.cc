// Fuzz target: bytes read as a text-format JobSpec go through parsing,
// defaults and validation. A spec that validates must give every group
// positive input and output widths that chain from input_dim to
// num_classes.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "common/job_spec.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  absl::StatusOr<synthgrad::v1::JobSpec> spec = synthgrad::ParseJobSpec(
      std::string(reinterpret_cast<const char*>(data), size));
  if (!spec.ok()) return 0;
  synthgrad::ApplyJobDefaults(&*spec);
  if (!synthgrad::ValidateJobSpec(*spec).ok()) return 0;

  int width = spec->input_dim();
  for (int g = 0; g < spec->groups_size(); ++g) {
    if (synthgrad::GroupInputDim(*spec, g) != width) std::abort();
    width = synthgrad::GroupOutputDim(*spec, g);
    if (width <= 0) std::abort();
  }
  if (width != spec->num_classes()) std::abort();
  return 0;
}
