#include "common/optimizer.h"

#include <cmath>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tensor_proto.h"

namespace synthgrad {
namespace {

std::vector<Matrix> ZerosLike(const std::vector<Matrix>& parameters) {
  std::vector<Matrix> zeros;
  zeros.reserve(parameters.size());
  for (const Matrix& p : parameters) {
    zeros.push_back(Matrix::Zero(p.rows(), p.cols()));
  }
  return zeros;
}

absl::Status CheckCoefficient(const char* name, float value) {
  if (!(value >= 0.0f && value < 1.0f)) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer ", name, " must be in [0, 1), got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<Optimizer>> Optimizer::Create(
    const v1::OptimizerSpec& spec) {
  if (!(spec.learning_rate() > 0.0f) || !std::isfinite(spec.learning_rate())) {
    return absl::InvalidArgumentError(
        absl::StrCat("optimizer learning_rate must be positive and finite, got ",
                     spec.learning_rate()));
  }
  if (spec.learning_rate_half_life_steps() < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "optimizer learning_rate_half_life_steps must be 0 (constant rate) or "
        "positive, got ",
        spec.learning_rate_half_life_steps()));
  }
  switch (spec.kind()) {
    case v1::OptimizerSpec::KIND_SGD: {
      absl::Status status = CheckCoefficient("momentum", spec.momentum());
      if (!status.ok()) return status;
      return std::make_unique<SgdOptimizer>(
          spec.learning_rate(), spec.momentum(),
          spec.learning_rate_half_life_steps());
    }
    case v1::OptimizerSpec::KIND_ADAM: {
      const float beta1 = spec.beta1() == 0.0f ? 0.9f : spec.beta1();
      const float beta2 = spec.beta2() == 0.0f ? 0.999f : spec.beta2();
      const float epsilon = spec.epsilon() == 0.0f ? 1e-8f : spec.epsilon();
      for (absl::Status status : {CheckCoefficient("beta1", beta1),
                                  CheckCoefficient("beta2", beta2)}) {
        if (!status.ok()) return status;
      }
      if (!(epsilon > 0.0f) || !std::isfinite(epsilon)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "optimizer epsilon must be positive and finite, got ", epsilon));
      }
      return std::make_unique<AdamOptimizer>(
          spec.learning_rate(), beta1, beta2, epsilon,
          spec.learning_rate_half_life_steps());
    }
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("unknown optimizer kind ",
                       v1::OptimizerSpec::Kind_Name(spec.kind()),
                       "; use KIND_SGD or KIND_ADAM"));
  }
}

float Optimizer::DecayedLearningRate(float learning_rate,
                                     int64_t half_life_steps, int64_t step) {
  if (half_life_steps <= 0) return learning_rate;
  return learning_rate *
         static_cast<float>(std::exp2(-static_cast<double>(step) /
                                      static_cast<double>(half_life_steps)));
}

void SgdOptimizer::Step(std::vector<Matrix>& parameters,
                        const std::vector<Matrix>& gradients,
                        float gradient_scale) {
  if (velocity_.empty()) velocity_ = ZerosLike(parameters);
  const float learning_rate =
      DecayedLearningRate(learning_rate_, half_life_steps_, step_);
  ++step_;
  for (size_t i = 0; i < parameters.size(); ++i) {
    velocity_[i] = momentum_ * velocity_[i] + gradient_scale * gradients[i];
    parameters[i] -= learning_rate * velocity_[i];
  }
}

void AdamOptimizer::Step(std::vector<Matrix>& parameters,
                         const std::vector<Matrix>& gradients,
                         float gradient_scale) {
  if (first_moment_.empty()) {
    first_moment_ = ZerosLike(parameters);
    second_moment_ = ZerosLike(parameters);
  }
  ++step_;
  const float correction1 =
      1.0f - static_cast<float>(std::pow(beta1_, static_cast<double>(step_)));
  const float correction2 =
      1.0f - static_cast<float>(std::pow(beta2_, static_cast<double>(step_)));
  // The rate decays by the number of earlier updates, step_ - 1.
  const float step_size =
      DecayedLearningRate(learning_rate_, half_life_steps_, step_ - 1) /
      correction1;
  const float root_correction2 = std::sqrt(correction2);

  for (size_t i = 0; i < parameters.size(); ++i) {
    auto g = gradient_scale * gradients[i].array();
    first_moment_[i].array() =
        beta1_ * first_moment_[i].array() + (1.0f - beta1_) * g;
    second_moment_[i].array() =
        beta2_ * second_moment_[i].array() + (1.0f - beta2_) * g.square();
    parameters[i].array() -=
        step_size * first_moment_[i].array() /
        (second_moment_[i].array().sqrt() / root_correction2 + epsilon_);
  }
}

absl::StatusOr<std::vector<Matrix>> Optimizer::SlotsFromProto(
    const google::protobuf::RepeatedPtrField<v1::Tensor>& slots,
    const std::vector<Matrix>& parameters, absl::string_view what) {
  // Empty slots are the state before the first step.
  if (slots.empty()) return std::vector<Matrix>();
  return ParametersFromProto(slots, parameters, what);
}

void SgdOptimizer::SaveState(v1::OptimizerState* state) const {
  state->Clear();
  state->set_step(step_);
  for (const Matrix& v : velocity_) MatrixToProto(v, state->add_first_slots());
}

absl::Status SgdOptimizer::RestoreState(const v1::OptimizerState& state,
                                        const std::vector<Matrix>& parameters) {
  if (state.step() < 0 || !state.second_slots().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an SGD state needs a step >= 0 and no second slots; got step ",
        state.step(), " and ", state.second_slots_size(), " second slots"));
  }
  absl::StatusOr<std::vector<Matrix>> velocity =
      SlotsFromProto(state.first_slots(), parameters, "SGD velocity");
  if (!velocity.ok()) return velocity.status();
  velocity_ = *std::move(velocity);
  step_ = state.step();
  return absl::OkStatus();
}

void AdamOptimizer::SaveState(v1::OptimizerState* state) const {
  state->Clear();
  state->set_step(step_);
  for (const Matrix& m : first_moment_) MatrixToProto(m, state->add_first_slots());
  for (const Matrix& v : second_moment_) {
    MatrixToProto(v, state->add_second_slots());
  }
}

absl::Status AdamOptimizer::RestoreState(const v1::OptimizerState& state,
                                         const std::vector<Matrix>& parameters) {
  if (state.step() < 0 ||
      state.first_slots_size() != state.second_slots_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "an Adam state needs a step >= 0 and as many first as second "
        "moments; got step ", state.step(), ", ", state.first_slots_size(),
        " and ", state.second_slots_size()));
  }
  absl::StatusOr<std::vector<Matrix>> first =
      SlotsFromProto(state.first_slots(), parameters, "Adam first moment");
  if (!first.ok()) return first.status();
  absl::StatusOr<std::vector<Matrix>> second =
      SlotsFromProto(state.second_slots(), parameters, "Adam second moment");
  if (!second.ok()) return second.status();
  first_moment_ = *std::move(first);
  second_moment_ = *std::move(second);
  step_ = state.step();
  return absl::OkStatus();
}

}  // namespace synthgrad
