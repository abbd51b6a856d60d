// Fuzz target: the Forward and Gradient paths of a layer group. The first
// byte picks the message and the group. The rest is parsed as a
// ForwardRequest or GradientRequest and goes through the conversion and
// checks of the layer service's handlers. An accepted message then goes
// through the group's update rules. The groups persist across inputs, so sequences of
// batches and gradients are explored too.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>

#include "common/group.h"
#include "common/in_process_trainer.h"
#include "common/job_spec.h"
#include "common/tensor_proto.h"

namespace {

synthgrad::InProcessTrainer& Trainer() {
  static synthgrad::InProcessTrainer* const trainer = [] {
    absl::StatusOr<synthgrad::v1::JobSpec> spec = synthgrad::ParseJobSpec(R"pb(
      mode: TRAINING_MODE_DNI input_dim: 6 num_classes: 3 batch_size: 8
      epochs: 1 seed: 1
      groups { address: "a" layers { kind: KIND_LINEAR units: 5 }
               layers { kind: KIND_LAYER_NORM } layers { kind: KIND_RELU } }
      groups { address: "b" layers { kind: KIND_LINEAR units: 3 } }
      optimizer { kind: KIND_ADAM learning_rate: 0.01 }
      synthetic_gradient { optimizer { kind: KIND_ADAM learning_rate: 0.01 } }
    )pb");
    if (!spec.ok()) std::abort();
    auto created = synthgrad::InProcessTrainer::Create(*spec);
    if (!created.ok()) std::abort();
    return created->release();
  }();
  return *trainer;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  synthgrad::InProcessTrainer& trainer = Trainer();
  synthgrad::Group& group = trainer.group(data[0] & 1);
  const bool forward = (data[0] & 2) == 0;
  ++data;
  --size;

  synthgrad::TensorLimits limits;
  limits.max_rows = group.max_batch_rows();
  if (forward) {
    synthgrad::v1::ForwardRequest request;
    if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
    limits.cols = group.input_dim();
    absl::StatusOr<synthgrad::Matrix> x =
        synthgrad::MatrixFromProto(request.activations(), limits, "activations");
    if (!x.ok()) return 0;
    synthgrad::ForwardMessage message;
    message.batch_id = request.batch_id();
    message.activations = *std::move(x);
    message.labels.assign(request.labels().begin(), request.labels().end());
    message.kind = request.mode() == synthgrad::v1::BATCH_MODE_EVAL
                       ? synthgrad::BatchKind::kEval
                       : synthgrad::BatchKind::kTrain;
    if (!group.AcceptForward(message).ok()) return 0;
    group.HandleForward(std::move(message));
  } else {
    synthgrad::v1::GradientRequest request;
    if (!request.ParseFromArray(data, static_cast<int>(size))) return 0;
    limits.cols = group.output_dim();
    absl::StatusOr<synthgrad::Matrix> g =
        synthgrad::MatrixFromProto(request.gradient(), limits, "gradient");
    if (!g.ok()) return 0;
    synthgrad::GradientMessage message{request.batch_id(), *std::move(g)};
    if (!group.AcceptGradient(message).ok()) return 0;
    group.HandleGradient(std::move(message));
  }
  return 0;
}
