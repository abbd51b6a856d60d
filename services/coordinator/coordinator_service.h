// The synthgrad.v1.CoordinatorService: owns one training job at a time
// (services/coordinator/job.h runs it). ReportBatch, called by the last
// group, closes a batch.
//
// Thread-safe.
#ifndef SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
#define SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/checkpoint.h"
#include "prometheus/registry.h"
#include "services/metrics.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

namespace synthgrad {

class Job;

class CoordinatorServiceImpl final : public v1::CoordinatorService::Service {
 public:
  // Registers the coordinator's metrics in `registry`. Jobs write the
  // coordinator's part of their checkpoints to `checkpoint_directory`, and
  // StartJob with resume reads it there.
  explicit CoordinatorServiceImpl(
      prometheus::Registry& registry,
      std::optional<CheckpointDirectory> checkpoint_directory = std::nullopt);
  // Stops the running job, if any, and waits for its thread.
  ~CoordinatorServiceImpl() override;

  // Stops the running job, if any, after a final checkpoint when the job
  // has checkpoints on, and waits for it. Call before shutting the server
  // down: draining the batches in flight needs ReportBatch.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

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

  // Reads the coordinator's checkpoint of `spec` for a resume.
  absl::StatusOr<v1::CoordinatorCheckpoint> LoadCheckpoint(
      const v1::JobSpec& spec) const;

  RpcMetrics rpc_metrics_;
  CoordinatorMetrics metrics_;
  const std::optional<CheckpointDirectory> checkpoint_directory_;

  absl::Mutex mu_;
  std::string advertise_address_ ABSL_GUARDED_BY(mu_);
  std::shared_ptr<Job> job_ ABSL_GUARDED_BY(mu_);
  int job_count_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_COORDINATOR_COORDINATOR_SERVICE_H_
