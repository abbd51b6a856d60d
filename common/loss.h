// Softmax cross-entropy for classification.
#ifndef SYNTHGRAD_COMMON_LOSS_H_
#define SYNTHGRAD_COMMON_LOSS_H_

#include <cstdint>

#include "absl/types/span.h"
#include "common/tensor.h"

namespace synthgrad {

struct LossResult {
  // Mean over the batch of -log softmax(logits)[label], in nats.
  double mean_loss = 0.0;
  // Rows whose largest logit is at the label (first maximum on ties).
  int correct = 0;
  // softmax(logits) - onehot(label): row i is d(loss of example i) / d(row i
  // of logits), the per-example convention of Network::Backward.
  Matrix gradient;
};

// Evaluates logits [B, C] against labels (B entries, each in [0, C)). The
// caller validates the labels. The gradient is computed only when
// `want_gradient` is true.
LossResult SoftmaxCrossEntropy(const Matrix& logits,
                               absl::Span<const int32_t> labels,
                               bool want_gradient);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_LOSS_H_
