// The synthetic-gradient model M of a layer group: it predicts g = dL/dh, the
// per-example gradient of the loss with respect to the group's output h
// [B, D], so the group can update before the true gradient arrives.
//
// Input: h, or [h, onehot(y)] of width D + C when conditioned on labels
// (cDNI). Output: [B, D]. Hidden layers are Linear + ReLU; the output layer is
// Linear and starts at zero, weights and bias, so every prediction before the
// first Train call is exactly zero.
//
// Training minimises the L2 loss 0.5 * mean_i ||M(h_i) - target_i||^2 against
// the gradient that later arrives from the next group.
//
// Not thread-safe; the group's compute thread owns it.
#ifndef SYNTHGRAD_COMMON_SYNTHETIC_GRADIENT_H_
#define SYNTHGRAD_COMMON_SYNTHETIC_GRADIENT_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/network.h"
#include "common/optimizer.h"
#include "common/tensor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

class SyntheticGradientModel {
 public:
  struct TrainResult {
    // L2 loss before the update.
    double loss = 0.0;
    // Cosine between prediction and target, both read as flat vectors.
    double cosine = 0.0;
  };

  // `num_classes` is 0 for an unconditioned model.
  static absl::StatusOr<SyntheticGradientModel> Create(
      int output_dim, int num_classes,
      const v1::SyntheticGradientSpec& spec, uint64_t seed);

  // Returns M(h) or M(h, y). `labels` is ignored when unconditioned.
  Matrix Predict(const Matrix& h, absl::Span<const int32_t> labels) const;

  // Returns the L2 loss of the prediction against `target` without updating.
  double Loss(const Matrix& h, absl::Span<const int32_t> labels,
              const Matrix& target) const;

  // Sets network().gradients() to the gradient of the summed per-example
  // loss 0.5 ||M(h_i) - target_i||^2 and returns the prediction.
  Matrix ComputeGradients(const Matrix& h, absl::Span<const int32_t> labels,
                          const Matrix& target);

  // Takes one optimizer step towards `target`.
  TrainResult Train(const Matrix& h, absl::Span<const int32_t> labels,
                    const Matrix& target);

  // Copies the parameters and the optimizer state, for a checkpoint.
  void SaveState(google::protobuf::RepeatedPtrField<v1::Tensor>* parameters,
                 v1::OptimizerState* optimizer) const;
  // Replaces the parameters and optimizer state with SaveState's output.
  // Fails with INVALID_ARGUMENT, changing nothing, when a count or shape
  // differs from this model or a value is not finite.
  absl::Status RestoreState(
      const google::protobuf::RepeatedPtrField<v1::Tensor>& parameters,
      const v1::OptimizerState& optimizer);
  bool conditional() const { return num_classes_ > 0; }
  Network& network() { return network_; }
  const Network& network() const { return network_; }

 private:
  SyntheticGradientModel(Network network, std::unique_ptr<Optimizer> optimizer,
                         int num_classes)
      : network_(std::move(network)),
        optimizer_(std::move(optimizer)),
        num_classes_(num_classes) {}

  Matrix Input(const Matrix& h, absl::Span<const int32_t> labels) const;

  Network network_;
  std::unique_ptr<Optimizer> optimizer_;
  int num_classes_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_SYNTHETIC_GRADIENT_H_
