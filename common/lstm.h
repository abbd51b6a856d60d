// A long short-term memory (LSTM) layer run over a chunk of T time steps,
// the recurrent core of the truncated-BPTT and DNI trainers.
//
// Per step, with x_t [B, I], state (h, c) [B, H] each and z = [x_t, h_{t-1}]:
//   a = z W + b,  W [I + H, 4H], b [1, 4H], gate blocks in the order i, f, g, o
//   i = sigmoid(a_i), f = sigmoid(a_f), g = tanh(a_g), o = sigmoid(a_o)
//   c_t = f * c_{t-1} + i * g,  h_t = o * tanh(c_t)
// The forget-gate bias starts at 1 so that early in training the cell keeps
// its content across steps (Gers et al. 2000); the other biases start at 0.
//
// Gradients follow the per-example convention of Network: Backward takes
// gradients of the summed per-example loss and adds the exact gradient of
// that sum to gradients().
//
// Not thread-safe; one thread owns a layer.
#ifndef SYNTHGRAD_COMMON_LSTM_H_
#define SYNTHGRAD_COMMON_LSTM_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"

namespace synthgrad {

// The recurrent state (h, c), or a gradient with respect to it.
struct LstmState {
  Matrix h;  // [B, H]
  Matrix c;  // [B, H]

  static LstmState Zero(int batch, int units) {
    return {Matrix::Zero(batch, units), Matrix::Zero(batch, units)};
  }
};

class Lstm {
 public:
  // Cached values of one Forward call over a chunk, for Backward.
  struct Cache {
    std::vector<Matrix> inputs;      // z_t = [x_t, h_{t-1}], [B, I + H]
    std::vector<Matrix> gates;       // activated i, f, g, o, [B, 4H]
    std::vector<Matrix> cells;       // c_t, [B, H]
    std::vector<Matrix> tanh_cells;  // tanh(c_t), [B, H]
    Matrix initial_cell;             // c_0, [B, H]
  };

  // Builds a layer with weights drawn from U(-1/sqrt(H), 1/sqrt(H)), a
  // common LSTM initialisation, using a generator seeded with `seed`. Fails
  // with INVALID_ARGUMENT for a non-positive width.
  static absl::StatusOr<Lstm> Create(int input_dim, int units, uint64_t seed);

  int input_dim() const { return input_dim_; }
  int units() const { return units_; }

  // Runs the chunk `inputs` (T matrices [B, I]) from `initial` and returns
  // the final state. `outputs` receives h_1..h_T. When `cache` is not null
  // it receives what Backward needs.
  LstmState Forward(const std::vector<Matrix>& inputs, const LstmState& initial,
                    std::vector<Matrix>* outputs, Cache* cache) const;

  // Backpropagates through the chunk recorded in `cache`.
  // `output_gradients` contains dL/dh_t for t = 1..T; an empty matrix means
  // zero. `final_gradient` is dL/d(h_T, c_T) arriving from after the chunk,
  // for example a synthetic gradient. Adds the parameter gradients to
  // gradients() and returns dL/d(h_0, c_0). When `input_gradients` is not
  // null it receives dL/dx_t for every step.
  LstmState Backward(const Cache& cache,
                     const std::vector<Matrix>& output_gradients,
                     const LstmState& final_gradient,
                     std::vector<Matrix>* input_gradients);

  // The weights W then the bias b.
  std::vector<Matrix>& parameters() { return parameters_; }
  const std::vector<Matrix>& parameters() const { return parameters_; }
  // Same layout as parameters().
  std::vector<Matrix>& gradients() { return gradients_; }
  const std::vector<Matrix>& gradients() const { return gradients_; }
  void ZeroGradients();

 private:
  Lstm(int input_dim, int units) : input_dim_(input_dim), units_(units) {}

  int input_dim_;
  int units_;
  std::vector<Matrix> parameters_;
  std::vector<Matrix> gradients_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_LSTM_H_
