// First-order optimizers over a list of parameter matrices.
#ifndef SYNTHGRAD_COMMON_OPTIMIZER_H_
#define SYNTHGRAD_COMMON_OPTIMIZER_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/tensor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

// Keeps per-parameter state (momentum, moments) sized on the first Step. Not
// thread-safe.
class Optimizer {
 public:
  virtual ~Optimizer() = default;

  // Updates `parameters` in place from g = gradient_scale * gradients[i].
  // Both lists must keep the same length and shapes across calls.
  virtual void Step(std::vector<Matrix>& parameters,
                    const std::vector<Matrix>& gradients,
                    float gradient_scale) = 0;

  // Fails with INVALID_ARGUMENT for an unknown kind, a non-positive or
  // non-finite learning rate, a negative learning_rate_half_life_steps, or a
  // coefficient outside [0, 1).
  static absl::StatusOr<std::unique_ptr<Optimizer>> Create(
      const v1::OptimizerSpec& spec);

  // Copies the step count and the per-parameter state into `state`, for a
  // checkpoint.
  virtual void SaveState(v1::OptimizerState* state) const = 0;
  // Replaces the state with SaveState's output. Fails with INVALID_ARGUMENT,
  // leaving the state unchanged, when the slots do not match the count and
  // shapes of `parameters` or hold a value that is not finite.
  virtual absl::Status RestoreState(const v1::OptimizerState& state,
                                    const std::vector<Matrix>& parameters) = 0;

 protected:
  // Returns learning_rate * 0.5^(step / half_life_steps), or learning_rate
  // when half_life_steps is 0. `step` counts earlier Step calls.
  static float DecayedLearningRate(float learning_rate, int64_t half_life_steps,
                                   int64_t step);
  // Converts one list of slots of a saved state, which must be empty or
  // match `parameters` in count and shapes.
  static absl::StatusOr<std::vector<Matrix>> SlotsFromProto(
      const google::protobuf::RepeatedPtrField<v1::Tensor>& slots,
      const std::vector<Matrix>& parameters, absl::string_view what);
};

// SGD with classical momentum mu: v = mu v + g, p = p - lr v.
class SgdOptimizer final : public Optimizer {
 public:
  SgdOptimizer(float learning_rate, float momentum, int64_t half_life_steps = 0)
      : learning_rate_(learning_rate),
        momentum_(momentum),
        half_life_steps_(half_life_steps) {}
  void Step(std::vector<Matrix>& parameters,
            const std::vector<Matrix>& gradients,
            float gradient_scale) override;
  void SaveState(v1::OptimizerState* state) const override;
  absl::Status RestoreState(const v1::OptimizerState& state,
                            const std::vector<Matrix>& parameters) override;

 private:
  float learning_rate_;
  float momentum_;
  int64_t half_life_steps_;
  int64_t step_ = 0;
  std::vector<Matrix> velocity_;
};

// Adam with bias correction, at step t from 1, with lr decayed as above:
//   m = b1 m + (1 - b1) g,  v = b2 v + (1 - b2) g^2,
//   p = p - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps).
class AdamOptimizer final : public Optimizer {
 public:
  AdamOptimizer(float learning_rate, float beta1, float beta2, float epsilon,
                int64_t half_life_steps = 0)
      : learning_rate_(learning_rate),
        beta1_(beta1),
        beta2_(beta2),
        epsilon_(epsilon),
        half_life_steps_(half_life_steps) {}
  void Step(std::vector<Matrix>& parameters,
            const std::vector<Matrix>& gradients,
            float gradient_scale) override;
  void SaveState(v1::OptimizerState* state) const override;
  absl::Status RestoreState(const v1::OptimizerState& state,
                            const std::vector<Matrix>& parameters) override;

 private:
  float learning_rate_;
  float beta1_;
  float beta2_;
  float epsilon_;
  int64_t half_life_steps_;
  int64_t step_ = 0;
  std::vector<Matrix> first_moment_;
  std::vector<Matrix> second_moment_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_OPTIMIZER_H_
