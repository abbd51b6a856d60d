// The synthgrad.v1.LayerService: one layer group behind gRPC.
//
// Handlers only validate, convert and hand messages to the group's compute
// thread (GroupWorker); they never touch parameters. Outgoing Forward,
// Gradient and ReportBatch calls leave through one RpcSender per peer.
//
// Thread-safe: gRPC calls the handlers from many threads.
#ifndef SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_
#define SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_

#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

namespace synthgrad {

class LayerServiceImpl final : public v1::LayerService::Service {
 public:
  LayerServiceImpl();
  ~LayerServiceImpl() override;

  grpc::Status Configure(grpc::ServerContext* context,
                         const v1::ConfigureRequest* request,
                         v1::ConfigureResponse* response) override;
  grpc::Status Forward(grpc::ServerContext* context,
                       const v1::ForwardRequest* request,
                       v1::ForwardResponse* response) override;
  grpc::Status Gradient(grpc::ServerContext* context,
                        const v1::GradientRequest* request,
                        v1::GradientResponse* response) override;
  grpc::Status GetStatus(grpc::ServerContext* context,
                         const v1::GetStatusRequest* request,
                         v1::GroupStatus* response) override;
  grpc::Status GetParameters(grpc::ServerContext* context,
                             const v1::GetParametersRequest* request,
                             v1::GetParametersResponse* response) override;

 private:
  // The transport, group and compute thread of one configured job.
  class Runtime;

  // Returns the current runtime, or null before the first Configure.
  std::shared_ptr<Runtime> CurrentRuntime() ABSL_LOCKS_EXCLUDED(mu_);

  absl::Mutex mu_;
  std::shared_ptr<Runtime> runtime_ ABSL_GUARDED_BY(mu_);
  // Requests rejected before any group was configured.
  int64_t rejected_unconfigured_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_LAYER_LAYER_SERVICE_H_
