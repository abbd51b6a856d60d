// Layers, losses, optimizers and the synthetic-gradient model, each checked
// against finite differences or hand-computed values.
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "common/loss.h"
#include "common/network.h"
#include "common/optimizer.h"
#include "common/synthetic_gradient.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "tests/gradient_check.h"

namespace synthgrad {
namespace {

using testing_util::ExpectGradientMatches;
using testing_util::FiniteDifference;
using testing_util::RandomMatrix;

v1::LayerSpec Layer(v1::LayerSpec::Kind kind, int units = 0) {
  v1::LayerSpec spec;
  spec.set_kind(kind);
  spec.set_units(units);
  return spec;
}

// Checks Network::Backward for L = sum(Forward(x) .* r) with a random r,
// so dL/dy = r.
void CheckNetworkGradients(const std::vector<v1::LayerSpec>& layers,
                           int input_dim, uint64_t seed) {
  absl::StatusOr<Network> created = Network::Create(input_dim, layers, seed, false);
  ASSERT_TRUE(created.ok()) << created.status();
  Network net = *std::move(created);
  Matrix x = RandomMatrix(4, input_dim, seed + 1);
  const Matrix r = RandomMatrix(4, net.output_dim(), seed + 2);
  auto loss = [&] {
    return static_cast<double>(
        (net.Forward(x, nullptr).cast<double>().array() * r.cast<double>().array())
            .sum());
  };

  Network::Trace trace;
  net.Forward(x, &trace);
  net.ZeroGradients();
  const Matrix dx = net.Backward(trace, r, /*want_input_gradient=*/true);
  const std::vector<Matrix> gradients = net.gradients();

  ExpectGradientMatches(&x, dx, loss, "input");
  for (size_t p = 0; p < gradients.size(); ++p) {
    ExpectGradientMatches(&net.parameters()[p], gradients[p], loss,
                          "parameter " + std::to_string(p));
  }
}

TEST(NetworkGradient, LinearMatchesFiniteDifferences) {
  CheckNetworkGradients({Layer(v1::LayerSpec::KIND_LINEAR, 3)}, 5, 1);
}

TEST(NetworkGradient, ReluStackMatchesFiniteDifferences) {
  CheckNetworkGradients(
      {Layer(v1::LayerSpec::KIND_LINEAR, 6), Layer(v1::LayerSpec::KIND_RELU),
       Layer(v1::LayerSpec::KIND_LINEAR, 3)},
      4, 2);
}

TEST(NetworkGradient, LayerNormMatchesFiniteDifferences) {
  CheckNetworkGradients(
      {Layer(v1::LayerSpec::KIND_LINEAR, 6), Layer(v1::LayerSpec::KIND_LAYER_NORM),
       Layer(v1::LayerSpec::KIND_RELU), Layer(v1::LayerSpec::KIND_LINEAR, 3)},
      4, 3);
}

TEST(NetworkGradient, SkipsInputGradientWhenNotWanted) {
  absl::StatusOr<Network> net =
      Network::Create(3, {Layer(v1::LayerSpec::KIND_LINEAR, 2)}, 4, false);
  ASSERT_TRUE(net.ok());
  Network::Trace trace;
  net->Forward(RandomMatrix(2, 3, 5), &trace);
  const Matrix dx =
      net->Backward(trace, RandomMatrix(2, 2, 6), /*want_input_gradient=*/false);
  EXPECT_EQ(dx.size(), 0);
  EXPECT_NE(net->gradients()[0].norm(), 0.0f);
}

TEST(NetworkCreate, RejectsNonPositiveUnits) {
  absl::StatusOr<Network> net =
      Network::Create(3, {Layer(v1::LayerSpec::KIND_LINEAR, 0)}, 1, false);
  ASSERT_FALSE(net.ok());
  EXPECT_EQ(net.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(net.status().message().find("got 0"), std::string::npos);
}

TEST(NetworkCreate, SameSeedGivesSameWeights) {
  auto a = Network::Create(8, {Layer(v1::LayerSpec::KIND_LINEAR, 4)}, 7, false);
  auto b = Network::Create(8, {Layer(v1::LayerSpec::KIND_LINEAR, 4)}, 7, false);
  auto c = Network::Create(8, {Layer(v1::LayerSpec::KIND_LINEAR, 4)}, 8, false);
  EXPECT_EQ(a->parameters()[0], b->parameters()[0]);
  EXPECT_NE(a->parameters()[0], c->parameters()[0]);
}

TEST(SoftmaxCrossEntropy, GradientMatchesFiniteDifferences) {
  Matrix logits = RandomMatrix(5, 4, 11);
  const std::vector<int32_t> labels = {0, 3, 1, 2, 3};
  const LossResult result = SoftmaxCrossEntropy(logits, labels, true);
  // The gradient is per example: the sum of losses is mean_loss * rows.
  auto loss = [&] {
    return SoftmaxCrossEntropy(logits, labels, false).mean_loss * logits.rows();
  };
  ExpectGradientMatches(&logits, result.gradient, loss, "logits");
}

TEST(SoftmaxCrossEntropy, UniformLogitsGiveLogClasses) {
  const Matrix logits = Matrix::Zero(3, 10);
  const LossResult result = SoftmaxCrossEntropy(logits, {1, 2, 3}, false);
  EXPECT_NEAR(result.mean_loss, std::log(10.0), 1e-6);
}

TEST(SoftmaxCrossEntropy, CountsCorrectRows) {
  Matrix logits(3, 2);
  logits << 2, 1,  //
      0, 5,        //
      3, -1;
  EXPECT_EQ(SoftmaxCrossEntropy(logits, {0, 1, 1}, false).correct, 2);
}

TEST(SoftmaxCrossEntropy, LargeLogitsStayFinite) {
  Matrix logits(1, 3);
  logits << 1000, -1000, 0;
  const LossResult result = SoftmaxCrossEntropy(logits, {1}, true);
  EXPECT_TRUE(std::isfinite(result.mean_loss));
  EXPECT_TRUE(AllFinite(result.gradient));
}

v1::SyntheticGradientSpec SgSpec(std::vector<int> hidden) {
  v1::SyntheticGradientSpec spec;
  for (int units : hidden) spec.add_hidden_units(units);
  spec.mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.mutable_optimizer()->set_learning_rate(1e-2f);
  return spec;
}

TEST(SyntheticGradient, PredictsExactZeroBeforeFirstUpdate) {
  const std::vector<int32_t> labels = {0, 1, 2, 3, 4, 5};
  for (const auto& hidden : {std::vector<int>{}, std::vector<int>{16},
                             std::vector<int>{16, 8}}) {
    for (int classes : {0, 10}) {
      auto model = SyntheticGradientModel::Create(7, classes, SgSpec(hidden), 3);
      ASSERT_TRUE(model.ok()) << model.status();
      const Matrix prediction =
          model->Predict(RandomMatrix(6, 7, 4, 10.0f), labels);
      EXPECT_EQ(prediction.rows(), 6);
      EXPECT_EQ(prediction.cols(), 7);
      EXPECT_EQ(prediction.cwiseAbs().maxCoeff(), 0.0f)
          << "hidden layers " << hidden.size() << ", classes " << classes;
    }
  }
}

TEST(SyntheticGradient, GradientMatchesFiniteDifferences) {
  for (int classes : {0, 3}) {
    auto model = SyntheticGradientModel::Create(4, classes, SgSpec({5}), 9);
    ASSERT_TRUE(model.ok());
    // Give the zero output layer some weight so every path carries gradient.
    for (Matrix& p : model->network().parameters()) {
      p += RandomMatrix(p.rows(), p.cols(), 10, 0.3f);
    }
    const Matrix h = RandomMatrix(3, 4, 12);
    const Matrix target = RandomMatrix(3, 4, 13);
    const std::vector<int32_t> labels = {2, 0, 1};
    model->ComputeGradients(h, labels, target);
    const std::vector<Matrix> gradients = model->network().gradients();
    // ComputeGradients is per example: the sum of losses is Loss() * rows.
    auto loss = [&] { return model->Loss(h, labels, target) * h.rows(); };
    for (size_t p = 0; p < gradients.size(); ++p) {
      ExpectGradientMatches(&model->network().parameters()[p], gradients[p],
                            loss, "classes " + std::to_string(classes) +
                                      " parameter " + std::to_string(p));
    }
  }
}

TEST(SyntheticGradient, TrainingFitsALinearTarget) {
  auto model = SyntheticGradientModel::Create(4, 0, SgSpec({}), 1);
  ASSERT_TRUE(model.ok());
  const Matrix map = RandomMatrix(4, 4, 2);
  double first_loss = 0.0;
  SyntheticGradientModel::TrainResult result;
  for (int step = 0; step < 300; ++step) {
    const Matrix h = RandomMatrix(16, 4, 100 + step);
    result = model->Train(h, {}, h * map);
    if (step == 0) first_loss = result.loss;
  }
  EXPECT_LT(result.loss, 0.05 * first_loss);
  EXPECT_GT(result.cosine, 0.95);
}

TEST(Optimizer, SgdMomentumMatchesHandComputedSteps) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_SGD);
  spec.set_learning_rate(0.1f);
  spec.set_momentum(0.5f);
  auto optimizer = Optimizer::Create(spec);
  ASSERT_TRUE(optimizer.ok());
  std::vector<Matrix> params = {Matrix::Constant(1, 1, 1.0f)};
  const std::vector<Matrix> grads = {Matrix::Constant(1, 1, 4.0f)};
  (*optimizer)->Step(params, grads, 0.5f);  // v = 2, p = 1 - 0.2
  EXPECT_FLOAT_EQ(params[0](0, 0), 0.8f);
  (*optimizer)->Step(params, grads, 0.5f);  // v = 0.5 * 2 + 2 = 3, p = 0.8 - 0.3
  EXPECT_FLOAT_EQ(params[0](0, 0), 0.5f);
}

TEST(Optimizer, AdamFirstStepIsLearningRateTimesSign) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.set_learning_rate(0.01f);
  auto optimizer = Optimizer::Create(spec);
  ASSERT_TRUE(optimizer.ok());
  Matrix start(1, 3);
  start << 1, 2, 3;
  std::vector<Matrix> params = {start};
  Matrix g(1, 3);
  g << 5, -0.5, 0;
  (*optimizer)->Step(params, {g}, 1.0f);
  EXPECT_NEAR(params[0](0, 0), 0.99f, 1e-6);
  EXPECT_NEAR(params[0](0, 1), 2.01f, 1e-6);
  EXPECT_EQ(params[0](0, 2), 3.0f);
}

TEST(Optimizer, HalfLifeHalvesSgdLearningRate) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_SGD);
  spec.set_learning_rate(0.1f);
  spec.set_learning_rate_half_life_steps(2);
  auto optimizer = Optimizer::Create(spec);
  ASSERT_TRUE(optimizer.ok());
  std::vector<Matrix> params = {Matrix::Zero(1, 1)};
  const std::vector<Matrix> grads = {Matrix::Constant(1, 1, 1.0f)};
  // Steps 0, 1, 2 use rates 0.1, 0.1 / sqrt(2) and 0.05.
  (*optimizer)->Step(params, grads, 1.0f);
  EXPECT_FLOAT_EQ(params[0](0, 0), -0.1f);
  (*optimizer)->Step(params, grads, 1.0f);
  EXPECT_NEAR(params[0](0, 0), -0.1f - 0.1f / std::sqrt(2.0f), 1e-6);
  (*optimizer)->Step(params, grads, 1.0f);
  EXPECT_NEAR(params[0](0, 0), -0.1f - 0.1f / std::sqrt(2.0f) - 0.05f, 1e-6);

  spec.set_learning_rate_half_life_steps(-1);
  EXPECT_EQ(Optimizer::Create(spec).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(Optimizer, RejectsInvalidSpecs) {
  v1::OptimizerSpec no_kind;
  no_kind.set_learning_rate(0.1f);
  EXPECT_EQ(Optimizer::Create(no_kind).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::OptimizerSpec negative_rate;
  negative_rate.set_kind(v1::OptimizerSpec::KIND_SGD);
  negative_rate.set_learning_rate(-1.0f);
  EXPECT_EQ(Optimizer::Create(negative_rate).status().code(),
            absl::StatusCode::kInvalidArgument);

  v1::OptimizerSpec bad_momentum;
  bad_momentum.set_kind(v1::OptimizerSpec::KIND_SGD);
  bad_momentum.set_learning_rate(0.1f);
  bad_momentum.set_momentum(1.5f);
  auto status = Optimizer::Create(bad_momentum).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("1.5"), std::string::npos);
}

TEST(Cosine, ParallelOppositeAndZero) {
  const Matrix a = RandomMatrix(2, 3, 1);
  EXPECT_NEAR(Cosine(a, 2.0f * a), 1.0, 1e-6);
  EXPECT_NEAR(Cosine(a, -a), -1.0, 1e-6);
  EXPECT_EQ(Cosine(a, Matrix::Zero(2, 3)), 0.0);
}

}  // namespace
}  // namespace synthgrad
