// The synthgrad.v1.CoordinatorService: owns one training job at a time.
//
// A job runs on a thread of its own. It configures every group. Then, for
// each epoch, it shuffles the training set from the seed, cuts it into shards
// of batches and sends each batch to the first group, with at most
// max_in_flight batches awaiting their result from the last group. After the
// epoch it evaluates the test set. ReportBatch, called by the last group,
// closes a batch.
//
// Thread-safe.
#ifndef SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
#define SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "prometheus/registry.h"
#include "services/metrics.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

namespace synthgrad {

class CoordinatorServiceImpl final : public v1::CoordinatorService::Service {
 public:
  // Registers the coordinator's metrics in `registry`.
  explicit CoordinatorServiceImpl(prometheus::Registry& registry);
  // Stops the running job, if any, and waits for its thread.
  ~CoordinatorServiceImpl() override;

  // Sets the gRPC target groups use to reach this coordinator; the last group
  // sends ReportBatch there. Call before the first StartJob.
  void SetAdvertiseAddress(std::string address) ABSL_LOCKS_EXCLUDED(mu_);

  grpc::Status StartJob(grpc::ServerContext* context,
                        const v1::StartJobRequest* request,
                        v1::StartJobResponse* response) override {
    return rpc_metrics_.Timed("StartJob", [&] { return HandleStartJob(request, response); });
  }
  grpc::Status WatchJob(grpc::ServerContext* context,
                        const v1::WatchJobRequest* request,
                        grpc::ServerWriter<v1::JobStatus>* writer) override {
    return rpc_metrics_.Timed("WatchJob",
                 [&] { return HandleWatchJob(context, request, writer); });
  }
  grpc::Status GetJobStatus(grpc::ServerContext* context,
                            const v1::GetJobStatusRequest* request,
                            v1::JobStatus* response) override {
    return rpc_metrics_.Timed("GetJobStatus",
                 [&] { return HandleGetJobStatus(request, response); });
  }
  grpc::Status StopJob(grpc::ServerContext* context,
                       const v1::StopJobRequest* request,
                       v1::StopJobResponse* response) override {
    return rpc_metrics_.Timed("StopJob", [&] { return HandleStopJob(request); });
  }
  grpc::Status ReportBatch(grpc::ServerContext* context,
                           const v1::BatchResult* request,
                           v1::ReportBatchResponse* response) override {
    return rpc_metrics_.Timed("ReportBatch", [&] { return HandleReportBatch(request); });
  }

 private:
  class Job;

  grpc::Status HandleStartJob(const v1::StartJobRequest* request,
                              v1::StartJobResponse* response);
  grpc::Status HandleWatchJob(grpc::ServerContext* context,
                              const v1::WatchJobRequest* request,
                              grpc::ServerWriter<v1::JobStatus>* writer);
  grpc::Status HandleGetJobStatus(const v1::GetJobStatusRequest* request,
                                  v1::JobStatus* response);
  grpc::Status HandleStopJob(const v1::StopJobRequest* request);
  grpc::Status HandleReportBatch(const v1::BatchResult* request);

  // Returns the job with `job_id`, or the latest one when `job_id` is empty;
  // null when there is none.
  std::shared_ptr<Job> FindJob(const std::string& job_id)
      ABSL_LOCKS_EXCLUDED(mu_);

  RpcMetrics rpc_metrics_;
  CoordinatorMetrics metrics_;

  absl::Mutex mu_;
  std::string advertise_address_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
  int job_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
