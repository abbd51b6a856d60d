#include "common/network.h"

#include <cmath>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace synthgrad {
namespace {

constexpr float kLayerNormEpsilon = 1e-5f;

// Normalises each row of x to zero mean and unit variance; `inverse_std`
// receives 1 / sqrt(var + epsilon) per row.
Matrix NormalizeRows(const Matrix& x, Eigen::VectorXf* inverse_std) {
  const Eigen::VectorXf mean = x.rowwise().mean();
  Matrix centered = x.colwise() - mean;
  *inverse_std = (centered.array().square().rowwise().mean() + kLayerNormEpsilon)
                     .rsqrt()
                     .matrix();
  centered.array().colwise() *= inverse_std->array();
  return centered;
}

}  // namespace

absl::StatusOr<Network> Network::Create(
    int input_dim, const std::vector<v1::LayerSpec>& layers, uint64_t seed,
    bool zero_last_linear) {
  if (input_dim <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("network input width must be positive, got ", input_dim));
  }
  Network net;
  net.input_dim_ = input_dim;
  std::mt19937_64 rng(seed);

  int width = input_dim;
  for (size_t i = 0; i < layers.size(); ++i) {
    const v1::LayerSpec& spec = layers[i];
    switch (spec.kind()) {
      case v1::LayerSpec::KIND_LINEAR: {
        if (spec.units() <= 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              "layer ", i, ": linear units must be positive, got ",
              spec.units()));
        }
        const float limit = std::sqrt(6.0f / static_cast<float>(width));
        std::uniform_real_distribution<float> uniform(-limit, limit);
        Matrix w(width, spec.units());
        for (Eigen::Index k = 0; k < w.size(); ++k) w.data()[k] = uniform(rng);
        net.layers_.push_back({spec.kind(), width, spec.units(),
                               static_cast<int>(net.parameters_.size())});
        net.parameters_.push_back(std::move(w));
        net.parameters_.push_back(Matrix::Zero(1, spec.units()));
        width = spec.units();
        break;
      }
      case v1::LayerSpec::KIND_RELU:
        net.layers_.push_back({spec.kind(), width, width, -1});
        break;
      case v1::LayerSpec::KIND_LAYER_NORM:
        net.layers_.push_back({spec.kind(), width, width,
                               static_cast<int>(net.parameters_.size())});
        net.parameters_.push_back(Matrix::Ones(1, width));
        net.parameters_.push_back(Matrix::Zero(1, width));
        break;
      default:
        return absl::InvalidArgumentError(
            absl::StrCat("layer ", i, ": unknown kind ",
                         v1::LayerSpec::Kind_Name(spec.kind())));
    }
  }
  net.output_dim_ = width;

  if (zero_last_linear) {
    for (auto it = net.layers_.rbegin(); it != net.layers_.rend(); ++it) {
      if (it->kind != v1::LayerSpec::KIND_LINEAR) continue;
      net.parameters_[it->parameter_index].setZero();
      net.parameters_[it->parameter_index + 1].setZero();
      break;
    }
  }
  for (const Matrix& p : net.parameters_) {
    net.gradients_.push_back(Matrix::Zero(p.rows(), p.cols()));
  }
  return net;
}

int64_t Network::parameter_count() const {
  int64_t count = 0;
  for (const Matrix& p : parameters_) count += p.size();
  return count;
}

Matrix Network::Forward(const Matrix& x, Trace* trace) const {
  if (trace != nullptr) trace->clear();
  Matrix current = x;
  for (const Layer& layer : layers_) {
    Matrix next;
    if (layer.kind == v1::LayerSpec::KIND_LINEAR) {
      const Matrix& w = parameters_[layer.parameter_index];
      const Matrix& b = parameters_[layer.parameter_index + 1];
      next.noalias() = current * w;
      next.rowwise() += b.row(0);
    } else if (layer.kind == v1::LayerSpec::KIND_LAYER_NORM) {
      Eigen::VectorXf inverse_std;
      next = NormalizeRows(current, &inverse_std);
      next.array().rowwise() *=
          parameters_[layer.parameter_index].row(0).array();
      next.rowwise() += parameters_[layer.parameter_index + 1].row(0);
    } else {
      next = current.cwiseMax(0.0f);
    }
    if (trace != nullptr) {
      trace->push_back(std::move(current));
    }
    current = std::move(next);
  }
  return current;
}

Matrix Network::Backward(const Trace& trace, const Matrix& dy,
                         bool want_input_gradient) {
  Matrix grad = dy;
  for (size_t i = layers_.size(); i-- > 0;) {
    const Layer& layer = layers_[i];
    const Matrix& input = trace[i];
    const bool need_dx = want_input_gradient || i > 0;
    if (layer.kind == v1::LayerSpec::KIND_LINEAR) {
      gradients_[layer.parameter_index].noalias() += input.transpose() * grad;
      gradients_[layer.parameter_index + 1] += grad.colwise().sum();
      if (need_dx) {
        Matrix dx;
        dx.noalias() = grad * parameters_[layer.parameter_index].transpose();
        grad = std::move(dx);
      }
    } else if (layer.kind == v1::LayerSpec::KIND_LAYER_NORM) {
      // With dxhat = dy * gamma and n features per row:
      // dx = inverse_std * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
      Eigen::VectorXf inverse_std;
      const Matrix xhat = NormalizeRows(input, &inverse_std);
      gradients_[layer.parameter_index] +=
          (grad.array() * xhat.array()).colwise().sum().matrix();
      gradients_[layer.parameter_index + 1] += grad.colwise().sum();
      if (need_dx) {
        Matrix dxhat = grad;
        dxhat.array().rowwise() *=
            parameters_[layer.parameter_index].row(0).array();
        const Eigen::VectorXf mean_dxhat = dxhat.rowwise().mean();
        const Eigen::VectorXf mean_dxhat_xhat =
            (dxhat.array() * xhat.array()).rowwise().mean();
        Matrix dx = dxhat.colwise() - mean_dxhat;
        dx -= (xhat.array().colwise() * mean_dxhat_xhat.array()).matrix();
        dx.array().colwise() *= inverse_std.array();
        grad = std::move(dx);
      }
    } else if (need_dx) {
      grad = (input.array() > 0.0f).select(grad.array(), 0.0f).matrix();
    }
    if (!need_dx) return Matrix();
  }
  return grad;
}

void Network::ZeroGradients() {
  for (Matrix& g : gradients_) g.setZero();
}

}  // namespace synthgrad
