// Google Benchmark micro-benchmarks of the pieces a layer group spends its
// time in: layer forward and backward, the synthetic-gradient model,
// proto-to-Eigen conversion and one Forward RPC round trip on loopback.
//
//   build/bench/micro_benchmarks --benchmark_min_time=0.5
#include <memory>
#include <random>
#include <vector>

#include "benchmark/benchmark.h"
#include "common/job_spec.h"
#include "common/network.h"
#include "common/synthetic_gradient.h"
#include "common/tensor_proto.h"
#include "prometheus/registry.h"
#include "services/layer/layer_service.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

Matrix RandomMatrix(int rows, int cols) {
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  Matrix m(rows, cols);
  for (Eigen::Index i = 0; i < m.size(); ++i) m.data()[i] = normal(rng);
  return m;
}

v1::LayerSpec Layer(v1::LayerSpec::Kind kind, int units = 0) {
  v1::LayerSpec spec;
  spec.set_kind(kind);
  spec.set_units(units);
  return spec;
}

// Linear(width) + LayerNorm + ReLU on a batch of 256, forward and backward.
void BM_LinearBlockForwardBackward(benchmark::State& state) {
  const int width = static_cast<int>(state.range(0));
  auto net = Network::Create(
      width,
      {Layer(v1::LayerSpec::KIND_LINEAR, width),
       Layer(v1::LayerSpec::KIND_LAYER_NORM), Layer(v1::LayerSpec::KIND_RELU)},
      1, false);
  const Matrix x = RandomMatrix(256, width);
  const Matrix dy = RandomMatrix(256, width);
  Network::Trace trace;
  for (auto _ : state) {
    benchmark::DoNotOptimize(net->Forward(x, &trace));
    net->ZeroGradients();
    benchmark::DoNotOptimize(net->Backward(trace, dy, true));
  }
  state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_LinearBlockForwardBackward)->Arg(256)->Arg(1024);

// Linear synthetic-gradient model: one prediction and one training step.
void BM_SyntheticGradientPredictAndTrain(benchmark::State& state) {
  const int width = static_cast<int>(state.range(0));
  v1::SyntheticGradientSpec spec;
  spec.mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.mutable_optimizer()->set_learning_rate(1e-3f);
  auto model = SyntheticGradientModel::Create(width, 0, spec, 1);
  const Matrix h = RandomMatrix(256, width);
  const Matrix target = RandomMatrix(256, width);
  for (auto _ : state) {
    benchmark::DoNotOptimize(model->Predict(h, {}));
    benchmark::DoNotOptimize(model->Train(h, {}, target));
  }
  state.SetItemsProcessed(state.iterations() * 256);
}
BENCHMARK(BM_SyntheticGradientPredictAndTrain)->Arg(256)->Arg(1024);

// Matrix -> proto -> Matrix with validation, for a [256, width] tensor.
void BM_TensorProtoRoundTrip(benchmark::State& state) {
  const int width = static_cast<int>(state.range(0));
  const Matrix m = RandomMatrix(256, width);
  v1::Tensor proto;
  for (auto _ : state) {
    MatrixToProto(m, &proto);
    benchmark::DoNotOptimize(MatrixFromProto(proto, {}, "t"));
  }
  state.SetBytesProcessed(state.iterations() * m.size() * sizeof(float));
}
BENCHMARK(BM_TensorProtoRoundTrip)->Arg(256)->Arg(1024);

// One Forward RPC of a [256, 256] eval batch (256 KiB) to a real layer
// service on loopback, measured at the client. The service converts and
// validates the tensor, then replies once the batch is queued. Its results
// go to a coordinator address where nothing listens, so the queue soon fills
// and later calls end in RESOURCE_EXHAUSTED after the same conversion.
void BM_ForwardRpcRoundTrip(benchmark::State& state) {
  prometheus::Registry registry;
  LayerServiceImpl service(registry);
  int port = 0;
  auto server = StartServer("127.0.0.1", 0, {&service}, &port);
  if (!server.ok()) {
    state.SkipWithError("cannot start the layer service");
    return;
  }
  auto stub = v1::LayerService::NewStub(MakeChannel("127.0.0.1:" + std::to_string(port)));

  // A single group ending in 10 classes, so eval batches just report to a
  // coordinator address that need not exist.
  v1::ConfigureRequest configure;
  v1::JobSpec* spec = configure.mutable_spec();
  spec->set_mode(v1::TRAINING_MODE_BACKPROP);
  spec->set_input_dim(256);
  spec->set_num_classes(10);
  spec->set_batch_size(256);
  spec->set_epochs(1);
  v1::GroupSpec* group = spec->add_groups();
  group->set_address("127.0.0.1:" + std::to_string(port));
  *group->add_layers() = Layer(v1::LayerSpec::KIND_LINEAR, 10);
  spec->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_SGD);
  spec->mutable_optimizer()->set_learning_rate(0.1f);
  configure.set_coordinator_address("127.0.0.1:1");
  {
    grpc::ClientContext context;
    v1::ConfigureResponse response;
    if (!stub->Configure(&context, configure, &response).ok()) {
      state.SkipWithError("Configure failed");
      return;
    }
  }

  v1::ForwardRequest request;
  request.set_mode(v1::BATCH_MODE_EVAL);
  MatrixToProto(RandomMatrix(256, 256), request.mutable_activations());
  for (int i = 0; i < 256; ++i) request.add_labels(i % 10);
  int64_t batch_id = 0;
  for (auto _ : state) {
    request.set_batch_id(++batch_id);
    grpc::ClientContext context;
    v1::ForwardResponse response;
    const grpc::Status status = stub->Forward(&context, request, &response);
    if (!status.ok() && status.error_code() != grpc::StatusCode::RESOURCE_EXHAUSTED) {
      state.SkipWithError(status.error_message().c_str());
      break;
    }
  }
  state.SetBytesProcessed(state.iterations() * 256 * 256 * sizeof(float));
  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}
BENCHMARK(BM_ForwardRpcRoundTrip)->UseRealTime();

}  // namespace
}  // namespace synthgrad

BENCHMARK_MAIN();
