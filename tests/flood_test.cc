// Floods one layer service with Forward calls from 8 concurrent clients for
// 60 seconds while its results cannot leave (the coordinator address is
// dead), so every bounded queue fills. The service must keep replying,
// reject the excess with RESOURCE_EXHAUSTED and count it, and keep this
// process's peak memory under a fixed bound.
#include <atomic>
#include <chrono>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tensor_proto.h"
#include "gtest/gtest.h"
#include "prometheus/registry.h"
#include "services/layer/layer_service.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

constexpr int kClients = 8;
constexpr auto kDuration = std::chrono::seconds(60);
// Queues hold at most 2 * 64 + 8 events of 784 KiB each (about 107 MiB)
// in the worker and as many in the sender; 512 MiB leaves room for gRPC
// buffers and the test itself.
constexpr int64_t kMaxPeakKib = 512 * 1024;

// Returns this process's peak resident set (VmHWM) in KiB.
int64_t PeakResidentKib() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

TEST(Flood, BoundedMemoryAndCountedRejections) {
  prometheus::Registry registry;
  LayerServiceImpl service(registry);
  int port = 0;
  auto server = StartServer("127.0.0.1", 0, {&service}, &port);
  ASSERT_TRUE(server.ok()) << server.status();
  const std::string address = absl::StrCat("127.0.0.1:", port);

  // One group, 784 -> 10, whose batch results go to an address where
  // nothing listens, so its sender retries and its queues fill.
  v1::ConfigureRequest configure;
  v1::JobSpec* spec = configure.mutable_spec();
  spec->set_mode(v1::TRAINING_MODE_BACKPROP);
  spec->set_input_dim(784);
  spec->set_num_classes(10);
  spec->set_batch_size(256);
  spec->set_epochs(1);
  v1::GroupSpec* group = spec->add_groups();
  group->set_address(address);
  v1::LayerSpec* layer = group->add_layers();
  layer->set_kind(v1::LayerSpec::KIND_LINEAR);
  layer->set_units(10);
  spec->mutable_optimizer()->set_kind(v1::OptimizerSpec::KIND_SGD);
  spec->mutable_optimizer()->set_learning_rate(0.01f);
  configure.set_coordinator_address("127.0.0.1:1");
  auto stub = v1::LayerService::NewStub(MakeChannel(address));
  {
    grpc::ClientContext context;
    v1::ConfigureResponse response;
    ASSERT_TRUE(stub->Configure(&context, configure, &response).ok());
  }

  std::atomic<int64_t> accepted{0};
  std::atomic<int64_t> exhausted{0};
  std::atomic<int64_t> other{0};
  std::atomic<int64_t> next_id{1};
  const auto stop_at = std::chrono::steady_clock::now() + kDuration;
  std::vector<std::thread> clients;
  for (int c = 0; c < kClients; ++c) {
    clients.emplace_back([&] {
      auto client = v1::LayerService::NewStub(MakeChannel(address));
      v1::ForwardRequest request;
      request.set_mode(v1::BATCH_MODE_TRAIN);
      MatrixToProto(Matrix::Constant(256, 784, 0.5f), request.mutable_activations());
      for (int i = 0; i < 256; ++i) request.add_labels(i % 10);
      while (std::chrono::steady_clock::now() < stop_at) {
        request.set_batch_id(next_id++);
        grpc::ClientContext context;
        context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
        v1::ForwardResponse response;
        const grpc::Status status = client->Forward(&context, request, &response);
        if (status.ok()) {
          ++accepted;
        } else if (status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) {
          ++exhausted;
        } else {
          ++other;
        }
      }
    });
  }
  for (std::thread& client : clients) client.join();

  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  v1::GroupStatus status;
  ASSERT_TRUE(stub->GetStatus(&context, v1::GetStatusRequest(), &status).ok());

  const int64_t peak = PeakResidentKib();
  std::printf("accepted %lld, rejected with RESOURCE_EXHAUSTED %lld, other %lld, "
              "peak RSS %lld KiB\n",
              static_cast<long long>(accepted.load()),
              static_cast<long long>(exhausted.load()),
              static_cast<long long>(other.load()), static_cast<long long>(peak));
  EXPECT_GT(accepted.load(), 0);
  EXPECT_GT(exhausted.load(), 0);
  EXPECT_EQ(other.load(), 0);
  EXPECT_EQ(status.rejected_requests(), exhausted.load());
  EXPECT_GT(peak, 0);
  EXPECT_LT(peak, kMaxPeakKib);

  (*server)->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
}

}  // namespace
}  // namespace synthgrad
