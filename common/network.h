// A feed-forward stack of layers, the unit of computation of a layer group and
// of a synthetic-gradient model.
//
// Layers:
//   Linear: y = x W + b, with x [B, in], W [in, out], b [1, out], y [B, out].
//   ReLU:   y = max(x, 0), element-wise.
//   LayerNorm: per row, xhat = (x - mean(x)) / sqrt(var(x) + 1e-5) and
//           y = xhat * gamma + beta, with gamma, beta [1, n].
//
// Gradients follow the per-example convention of the wire format: Backward
// takes dy = d(sum of per-example losses) / dy, one row per example, and adds
// the exact gradient of that sum to gradients(). Callers average over the
// batch by passing 1/B as the optimizer's gradient scale.
//
// A Network is not thread-safe; one thread owns it.
#ifndef SYNTHGRAD_COMMON_NETWORK_H_
#define SYNTHGRAD_COMMON_NETWORK_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tensor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

class Network {
 public:
  // Inputs of each layer from one Forward call, needed by Backward.
  using Trace = std::vector<Matrix>;

  // Builds the stack. Linear weights start He-uniform, U(-sqrt(6/in),
  // sqrt(6/in)), from a generator seeded with `seed`; biases start at 0. With
  // `zero_last_linear`, the last linear layer's weights and bias start at 0.
  // Fails with INVALID_ARGUMENT for an unknown kind or a non-positive width.
  static absl::StatusOr<Network> Create(
      int input_dim, const std::vector<v1::LayerSpec>& layers, uint64_t seed,
      bool zero_last_linear);

  int input_dim() const { return input_dim_; }
  int output_dim() const { return output_dim_; }
  int64_t parameter_count() const;

  // Computes the output [B, output_dim] for x [B, input_dim]. When `trace` is
  // not null it receives what Backward needs.
  Matrix Forward(const Matrix& x, Trace* trace) const;

  // Adds the parameter gradients for output gradient dy [B, output_dim] to
  // gradients() and returns dx [B, input_dim], or an empty matrix when
  // `want_input_gradient` is false.
  Matrix Backward(const Trace& trace, const Matrix& dy,
                  bool want_input_gradient);

  // For each linear layer its weights then its bias; for each layer norm its
  // gamma then its beta.
  std::vector<Matrix>& parameters() { return parameters_; }
  const std::vector<Matrix>& parameters() const { return parameters_; }
  // Same layout as parameters().
  const std::vector<Matrix>& gradients() const { return gradients_; }
  void ZeroGradients();

 private:
  struct Layer {
    v1::LayerSpec::Kind kind;
    int inputs;
    int units;
    // Index of the weights or gamma in parameters_ (bias or beta at +1); -1
    // for ReLU.
    int parameter_index;
  };

  Network() = default;

  int input_dim_ = 0;
  int output_dim_ = 0;
  std::vector<Layer> layers_;
  std::vector<Matrix> parameters_;
  std::vector<Matrix> gradients_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_NETWORK_H_
