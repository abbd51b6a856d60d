#include "common/lstm.h"

#include <cmath>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace synthgrad {

absl::StatusOr<Lstm> Lstm::Create(int input_dim, int units, uint64_t seed) {
  if (input_dim <= 0 || units <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "lstm input width and units must be positive, got ", input_dim,
        " and ", units));
  }
  Lstm lstm(input_dim, units);
  std::mt19937_64 rng(seed);
  const float limit = 1.0f / std::sqrt(static_cast<float>(units));
  std::uniform_real_distribution<float> uniform(-limit, limit);
  Matrix weights(input_dim + units, 4 * units);
  for (Eigen::Index k = 0; k < weights.size(); ++k) {
    weights.data()[k] = uniform(rng);
  }
  Matrix bias = Matrix::Zero(1, 4 * units);
  bias.middleCols(units, units).setOnes();  // forget gate
  lstm.parameters_.push_back(std::move(weights));
  lstm.parameters_.push_back(std::move(bias));
  lstm.ZeroGradients();
  return lstm;
}

void Lstm::ZeroGradients() {
  gradients_.clear();
  for (const Matrix& p : parameters_) {
    gradients_.push_back(Matrix::Zero(p.rows(), p.cols()));
  }
}

LstmState Lstm::Forward(const std::vector<Matrix>& inputs,
                        const LstmState& initial, std::vector<Matrix>* outputs,
                        Cache* cache) const {
  const int h = units_;
  const Matrix& weights = parameters_[0];
  const Matrix& bias = parameters_[1];
  LstmState state = initial;
  if (outputs != nullptr) outputs->clear();
  if (cache != nullptr) {
    *cache = Cache();
    cache->initial_cell = initial.c;
  }
  for (const Matrix& x : inputs) {
    Matrix z(x.rows(), input_dim_ + h);
    z.leftCols(input_dim_) = x;
    z.rightCols(h) = state.h;
    Matrix gates = z * weights;
    gates.rowwise() += bias.row(0);
    // Sigmoid on i, f and o; tanh on g.
    auto logistic = [](Eigen::Block<Matrix> block) {
      block = (1.0f + (-block.array()).exp()).inverse().matrix();
    };
    logistic(gates.leftCols(2 * h));
    gates.middleCols(2 * h, h) = gates.middleCols(2 * h, h).array().tanh().matrix();
    logistic(gates.rightCols(h));

    state.c = (gates.middleCols(h, h).array() * state.c.array() +
               gates.leftCols(h).array() * gates.middleCols(2 * h, h).array())
                  .matrix();
    Matrix tanh_cell = state.c.array().tanh().matrix();
    state.h = (gates.rightCols(h).array() * tanh_cell.array()).matrix();

    if (outputs != nullptr) outputs->push_back(state.h);
    if (cache != nullptr) {
      cache->inputs.push_back(std::move(z));
      cache->gates.push_back(std::move(gates));
      cache->cells.push_back(state.c);
      cache->tanh_cells.push_back(std::move(tanh_cell));
    }
  }
  return state;
}

LstmState Lstm::Backward(const Cache& cache,
                         const std::vector<Matrix>& output_gradients,
                         const LstmState& final_gradient,
                         std::vector<Matrix>* input_gradients) {
  const int h = units_;
  const int steps = static_cast<int>(cache.inputs.size());
  const Matrix& weights = parameters_[0];
  if (input_gradients != nullptr) input_gradients->assign(steps, Matrix());

  Matrix dh = final_gradient.h;
  Matrix dc = final_gradient.c;
  for (int t = steps - 1; t >= 0; --t) {
    if (t < static_cast<int>(output_gradients.size()) &&
        output_gradients[t].size() > 0) {
      dh += output_gradients[t];
    }
    const Matrix& gates = cache.gates[t];
    const auto i = gates.leftCols(h).array();
    const auto f = gates.middleCols(h, h).array();
    const auto g = gates.middleCols(2 * h, h).array();
    const auto o = gates.rightCols(h).array();
    const auto tanh_cell = cache.tanh_cells[t].array();
    const Matrix& previous_cell = t > 0 ? cache.cells[t - 1] : cache.initial_cell;

    // Through h_t = o * tanh(c_t) into c_t, then into the four gates'
    // pre-activations.
    dc.array() += dh.array() * o * (1.0f - tanh_cell.square());
    Matrix d_pre(dh.rows(), 4 * h);
    d_pre.leftCols(h) = (dc.array() * g * i * (1.0f - i)).matrix();
    d_pre.middleCols(h, h) =
        (dc.array() * previous_cell.array() * f * (1.0f - f)).matrix();
    d_pre.middleCols(2 * h, h) = (dc.array() * i * (1.0f - g.square())).matrix();
    d_pre.rightCols(h) = (dh.array() * tanh_cell * o * (1.0f - o)).matrix();

    gradients_[0].noalias() += cache.inputs[t].transpose() * d_pre;
    gradients_[1] += d_pre.colwise().sum();
    const Matrix dz = d_pre * weights.transpose();
    if (input_gradients != nullptr) {
      (*input_gradients)[t] = dz.leftCols(input_dim_);
    }
    dh = dz.rightCols(h);
    dc = (dc.array() * f).matrix();
  }
  return {std::move(dh), std::move(dc)};
}

}  // namespace synthgrad
