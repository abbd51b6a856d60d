#include "common/synthetic_gradient.h"

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tensor_proto.h"

namespace synthgrad {

absl::StatusOr<SyntheticGradientModel> SyntheticGradientModel::Create(
    int output_dim, int num_classes, const v1::SyntheticGradientSpec& spec,
    uint64_t seed) {
  std::vector<v1::LayerSpec> layers;
  for (int units : spec.hidden_units()) {
    v1::LayerSpec linear;
    linear.set_kind(v1::LayerSpec::KIND_LINEAR);
    linear.set_units(units);
    layers.push_back(linear);
    v1::LayerSpec relu;
    relu.set_kind(v1::LayerSpec::KIND_RELU);
    layers.push_back(relu);
  }
  v1::LayerSpec output;
  output.set_kind(v1::LayerSpec::KIND_LINEAR);
  output.set_units(output_dim);
  layers.push_back(output);

  absl::StatusOr<Network> network =
      Network::Create(output_dim + num_classes, layers, seed,
                      /*zero_last_linear=*/true);
  if (!network.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic_gradient: ", network.status().message()));
  }
  absl::StatusOr<std::unique_ptr<Optimizer>> optimizer =
      Optimizer::Create(spec.optimizer());
  if (!optimizer.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "synthetic_gradient.", optimizer.status().message()));
  }
  return SyntheticGradientModel(*std::move(network), *std::move(optimizer),
                                num_classes);
}

Matrix SyntheticGradientModel::Input(const Matrix& h,
                                     absl::Span<const int32_t> labels) const {
  if (num_classes_ == 0) return h;
  Matrix input = Matrix::Zero(h.rows(), h.cols() + num_classes_);
  input.leftCols(h.cols()) = h;
  for (Eigen::Index i = 0; i < h.rows(); ++i) {
    input(i, h.cols() + labels[i]) = 1.0f;
  }
  return input;
}

Matrix SyntheticGradientModel::Predict(const Matrix& h,
                                       absl::Span<const int32_t> labels) const {
  return network_.Forward(Input(h, labels), nullptr);
}

double SyntheticGradientModel::Loss(const Matrix& h,
                                    absl::Span<const int32_t> labels,
                                    const Matrix& target) const {
  const Matrix error = Predict(h, labels) - target;
  return 0.5 * error.squaredNorm() / static_cast<double>(h.rows());
}

Matrix SyntheticGradientModel::ComputeGradients(
    const Matrix& h, absl::Span<const int32_t> labels, const Matrix& target) {
  Network::Trace trace;
  Matrix prediction = network_.Forward(Input(h, labels), &trace);
  network_.ZeroGradients();
  network_.Backward(trace, prediction - target, /*want_input_gradient=*/false);
  return prediction;
}

SyntheticGradientModel::TrainResult SyntheticGradientModel::Train(
    const Matrix& h, absl::Span<const int32_t> labels, const Matrix& target) {
  const Matrix prediction = ComputeGradients(h, labels, target);
  optimizer_->Step(network_.parameters(), network_.gradients(),
                   1.0f / static_cast<float>(h.rows()));

  TrainResult result;
  result.loss =
      0.5 * (prediction - target).squaredNorm() / static_cast<double>(h.rows());
  result.cosine = Cosine(prediction, target);
  return result;
}

void SyntheticGradientModel::SaveState(
    google::protobuf::RepeatedPtrField<v1::Tensor>* parameters,
    v1::OptimizerState* optimizer) const {
  parameters->Clear();
  for (const Matrix& p : network_.parameters()) MatrixToProto(p, parameters->Add());
  optimizer_->SaveState(optimizer);
}

absl::Status SyntheticGradientModel::RestoreState(
    const google::protobuf::RepeatedPtrField<v1::Tensor>& parameters,
    const v1::OptimizerState& optimizer) {
  absl::StatusOr<std::vector<Matrix>> restored = ParametersFromProto(
      parameters, network_.parameters(), "synthetic-gradient parameter");
  if (!restored.ok()) return restored.status();
  absl::Status status = optimizer_->RestoreState(optimizer, network_.parameters());
  if (!status.ok()) return status;
  network_.parameters() = *std::move(restored);
  return absl::OkStatus();
}

}  // namespace synthgrad
