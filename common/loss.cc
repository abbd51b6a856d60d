#include "common/loss.h"

#include <cmath>

namespace synthgrad {

LossResult SoftmaxCrossEntropy(const Matrix& logits,
                               absl::Span<const int32_t> labels,
                               bool want_gradient) {
  LossResult result;
  const Eigen::Index rows = logits.rows();

  // Subtracting each row's maximum keeps exp() from overflowing.
  Matrix shifted = logits.colwise() - logits.rowwise().maxCoeff();
  Matrix probabilities = shifted.array().exp().matrix();
  const Eigen::VectorXf sums = probabilities.rowwise().sum();

  double total = 0.0;
  for (Eigen::Index i = 0; i < rows; ++i) {
    const int label = labels[i];
    total += std::log(static_cast<double>(sums(i))) - shifted(i, label);
    Eigen::Index best = 0;
    logits.row(i).maxCoeff(&best);
    if (best == label) ++result.correct;
  }
  result.mean_loss = rows > 0 ? total / static_cast<double>(rows) : 0.0;

  if (want_gradient) {
    probabilities.array().colwise() /= sums.array();
    for (Eigen::Index i = 0; i < rows; ++i) probabilities(i, labels[i]) -= 1.0f;
    result.gradient = std::move(probabilities);
  }
  return result;
}

}  // namespace synthgrad
