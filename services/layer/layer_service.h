// The synthgrad.v1.LayerService: one layer group behind gRPC.
//
// Handlers only validate, convert and hand messages to the group's compute
// thread (GroupWorker); they never touch parameters. Outgoing Forward,
// Gradient and ReportBatch calls leave through one RpcSender per peer.
//
// Thread-safe: gRPC calls the handlers from many threads.
#ifndef SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_
#define SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_

#include <chrono>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "common/checkpoint.h"
#include "prometheus/registry.h"
#include "services/metrics.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

namespace synthgrad {

// Checkpoints a group keeps; older ones are deleted after each write. The
// coordinator restores the newest one that every process finished, which is
// at most one behind a group's newest.
inline constexpr int kKeptCheckpoints = 3;

struct LayerServiceOptions {
  // Added to every Forward and Gradient sent to a neighbouring group, to
  // emulate a slower link in experiments. Zero in normal use.
  std::chrono::microseconds link_latency{0};
  // Folder that Checkpoint writes to and Configure restores from. Without
  // it both fail with FAILED_PRECONDITION.
  std::optional<CheckpointDirectory> checkpoint_directory;
};

class LayerServiceImpl final : public v1::LayerService::Service {
 public:
  // Registers the group's metrics in `registry`.
  explicit LayerServiceImpl(prometheus::Registry& registry,
                            LayerServiceOptions options = {});
  ~LayerServiceImpl() override;

  grpc::Status Configure(grpc::ServerContext* context,
                         const v1::ConfigureRequest* request,
                         v1::ConfigureResponse* response) override {
    return rpc_metrics_.Timed("Configure", [&] { return HandleConfigure(request, response); });
  }
  grpc::Status Forward(grpc::ServerContext* context,
                       const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override {
    return rpc_metrics_.Timed("Forward", [&] { return HandleForward(request); });
  }
  grpc::Status Gradient(grpc::ServerContext* context,
                        const v1::GradientRequest* request,
                        v1::GradientResponse* response) override {
    return rpc_metrics_.Timed("Gradient", [&] { return HandleGradient(request); });
  }
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const v1::GetStatusRequest* request,
                         v1::GroupStatus* response) override {
    return rpc_metrics_.Timed("GetStatus", [&] { return HandleGetStatus(response); });
  }
  grpc::Status GetParameters(grpc::ServerContext* context,
                             const v1::GetParametersRequest* request,
                             v1::GetParametersResponse* response) override {
    return rpc_metrics_.Timed("GetParameters", [&] { return HandleGetParameters(response); });
  }
  grpc::Status Checkpoint(grpc::ServerContext* context,
                          const v1::CheckpointRequest* request,
                          v1::CheckpointResponse* response) override {
    return rpc_metrics_.Timed("Checkpoint",
                              [&] { return HandleCheckpoint(request, response); });
  }

 private:
  // The transport, group and compute thread of one configured job.
  class Runtime;

  grpc::Status HandleConfigure(const v1::ConfigureRequest* request,
                               v1::ConfigureResponse* response);
  grpc::Status HandleForward(const v1::ForwardRequest* request);
  grpc::Status HandleGradient(const v1::GradientRequest* request);
  grpc::Status HandleGetStatus(v1::GroupStatus* response);
  grpc::Status HandleGetParameters(v1::GetParametersResponse* response);
  grpc::Status HandleCheckpoint(const v1::CheckpointRequest* request,
                                v1::CheckpointResponse* response);

  // Loads checkpoint `checkpoint_id` into the new runtime's group.
  absl::Status Restore(Runtime& runtime, int64_t checkpoint_id);

  // Returns the current runtime, or null before the first Configure.
  std::shared_ptr<Runtime> CurrentRuntime() ABSL_LOCKS_EXCLUDED(mu_);

  const LayerServiceOptions options_;
  RpcMetrics rpc_metrics_;
  GroupMetrics group_metrics_;

  absl::Mutex mu_;
  std::shared_ptr<Runtime> runtime_ ABSL_GUARDED_BY(mu_);
  // Requests rejected before any group was configured.
  int64_t rejected_unconfigured_ ABSL_GUARDED_BY(mu_) = 0;

  // Held while a checkpoint is written, so two never interleave.
  absl::Mutex checkpoint_mu_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_
