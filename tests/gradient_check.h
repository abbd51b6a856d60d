// Test helpers shared by the gradient-checking tests: seeded random
// matrices and a central-difference check of analytic gradients.
#ifndef SYNTHGRAD_TESTS_GRADIENT_CHECK_H_
#define SYNTHGRAD_TESTS_GRADIENT_CHECK_H_

#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>

#include "common/tensor.h"
#include "gtest/gtest.h"

namespace synthgrad {
namespace testing_util {

// Returns a rows x cols matrix of N(0, scale^2) entries drawn from `seed`.
inline Matrix RandomMatrix(int rows, int cols, uint64_t seed,
                           float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, scale);
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

// Returns the central difference of `loss` in `value`, summed in double.
inline double FiniteDifference(float* value,
                               const std::function<double()>& loss) {
  constexpr float kStep = 1e-2f;
  const float saved = *value;
  *value = saved + kStep;
  const double up = loss();
  *value = saved - kStep;
  const double down = loss();
  *value = saved;
  return (up - down) / (2.0 * kStep);
}

// Expects every entry of `analytic` to match the finite difference of `loss`
// in the matching entry of `values`, within 2e-3 plus 2 % of the difference.
inline void ExpectGradientMatches(Matrix* values, const Matrix& analytic,
                                  const std::function<double()>& loss,
                                  const std::string& what) {
  ASSERT_EQ(values->rows(), analytic.rows()) << what;
  ASSERT_EQ(values->cols(), analytic.cols()) << what;
  for (Eigen::Index i = 0; i < values->size(); ++i) {
    const double numeric = FiniteDifference(values->data() + i, loss);
    const double expected = analytic.data()[i];
    EXPECT_NEAR(expected, numeric, 2e-3 + 2e-2 * std::abs(numeric))
        << what << " entry " << i;
  }
}

}  // namespace testing_util
}  // namespace synthgrad

#endif  // SYNTHGRAD_TESTS_GRADIENT_CHECK_H_
