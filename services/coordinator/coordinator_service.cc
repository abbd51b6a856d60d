#include "services/coordinator/coordinator_service.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/dataset.h"
#include "common/job_spec.h"
#include "glog/logging.h"
#include "services/coordinator/job.h"
#include "services/server_util.h"

namespace synthgrad {

CoordinatorServiceImpl::CoordinatorServiceImpl(
    prometheus::Registry& registry,
    std::optional<CheckpointDirectory> checkpoint_directory)
    : rpc_metrics_(registry),
      metrics_(registry),
      checkpoint_directory_(std::move(checkpoint_directory)) {}

void CoordinatorServiceImpl::SetAdvertiseAddress(std::string address) {
  absl::MutexLock lock(&mu_);
  advertise_address_ = std::move(address);
}

CoordinatorServiceImpl::~CoordinatorServiceImpl() = default;

void CoordinatorServiceImpl::Shutdown() {
  std::shared_ptr<Job> job = FindJob("");
  if (job == nullptr) return;
  job->Stop("the coordinator is shutting down", /*final_checkpoint=*/true);
  job->Wait();
}

std::shared_ptr<Job> CoordinatorServiceImpl::FindJob(
    const std::string& job_id) {
  absl::MutexLock lock(&mu_);
  if (job_ == nullptr) return nullptr;
  if (!job_id.empty() && job_->id() != job_id) return nullptr;
  return job_;
}

grpc::Status CoordinatorServiceImpl::HandleStartJob(
    const v1::StartJobRequest* request, v1::StartJobResponse* response) {
  std::shared_ptr<Job> current = FindJob("");
  if (current != nullptr && !current->finished()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        absl::StrCat("job ", current->id(),
                                     " is still running; stop it first"));
  }

  v1::JobSpec spec = request->spec();
  ApplyJobDefaults(&spec);
  absl::Status status = ValidateJobSpec(spec);
  if (!status.ok()) {
    LOG(WARNING) << "StartJob rejected an invalid spec: " << status;
    return ToGrpcStatus(status);
  }
  absl::StatusOr<TrainTestData> data = LoadFashionMnist(
      spec.data().dir(), spec.data().train_limit(), spec.data().test_limit());
  if (!data.ok()) {
    LOG(WARNING) << "StartJob cannot load data: " << data.status();
    return ToGrpcStatus(data.status());
  }
  if (data->train.input_dim() != spec.input_dim()) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("input_dim is ", spec.input_dim(), " but the images in ",
                     spec.data().dir(), " have ", data->train.input_dim(),
                     " pixels"));
  }
  if (data->train.size() == 0 || data->test.size() == 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("the data in ", spec.data().dir(),
                                     " has no training or no test examples"));
  }
  response->set_train_examples(data->train.size());
  response->set_test_examples(data->test.size());

  Job::Options options;
  options.checkpoint_directory = checkpoint_directory_;
  if (request->resume()) {
    absl::StatusOr<v1::CoordinatorCheckpoint> checkpoint = LoadCheckpoint(spec);
    if (!checkpoint.ok()) {
      LOG(WARNING) << "StartJob cannot resume: " << checkpoint.status();
      return ToGrpcStatus(checkpoint.status());
    }
    options.resume_from = *std::move(checkpoint);
  }

  std::shared_ptr<Job> job;
  {
    absl::MutexLock lock(&mu_);
    if (job_ != nullptr && !job_->finished()) {
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                          absl::StrCat("job ", job_->id(),
                                       " is still running; stop it first"));
    }
    const std::string id = absl::StrCat(
        spec.name().empty() ? "job" : spec.name(), "-", ++job_count_);
    options.advertise_address = advertise_address_;
    job = std::make_shared<Job>(id, job_count_, std::move(spec),
                                *std::move(data), std::move(options), &metrics_);
    job_ = job;
  }
  LOG(INFO) << "starting job " << job->id() << " with "
            << response->train_examples() << " training and "
            << response->test_examples() << " test examples";
  response->set_job_id(job->id());
  job->Start();
  return grpc::Status::OK;
}

absl::StatusOr<v1::CoordinatorCheckpoint>
CoordinatorServiceImpl::LoadCheckpoint(const v1::JobSpec& spec) const {
  if (!checkpoint_directory_.has_value()) {
    return absl::FailedPreconditionError(
        "cannot resume: this synthgrad_coordinator runs without "
        "--checkpoint_dir");
  }
  const uint64_t fingerprint = SpecFingerprint(spec);
  const std::string path = checkpoint_directory_->CoordinatorPath(fingerprint);
  v1::CoordinatorCheckpoint checkpoint;
  absl::Status status = ReadCheckpointFile(path, &checkpoint);
  if (absl::IsNotFound(status)) {
    return absl::NotFoundError(absl::StrCat(
        "cannot resume: no checkpoint of this job spec at ", path,
        "; a resumed job needs the same spec (group addresses and data "
        "folder may differ), or start it without resume"));
  }
  if (!status.ok()) return status;
  if (checkpoint.finished()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "cannot resume: the job with this spec already finished (", path,
        "); start it without resume to train it again"));
  }
  if (SpecFingerprint(checkpoint.spec()) != fingerprint) {
    return absl::DataLossError(absl::StrCat(
        path, " holds a checkpoint of another job spec; delete it or use "
              "another --checkpoint_dir"));
  }
  if (checkpoint.epoch() < 1 || checkpoint.epoch() > spec.epochs() + 1 ||
      checkpoint.next_batch() < 0) {
    return absl::DataLossError(absl::StrCat(
        path, " has an impossible cursor: epoch ", checkpoint.epoch(),
        ", batch ", checkpoint.next_batch()));
  }
  LOG(INFO) << "resuming from checkpoint " << checkpoint.checkpoint_id()
            << " in " << path << ": epoch " << checkpoint.epoch()
            << ", batch " << checkpoint.next_batch();
  return checkpoint;
}

grpc::Status CoordinatorServiceImpl::HandleWatchJob(
    grpc::ServerContext* context, const v1::WatchJobRequest* request,
    grpc::ServerWriter<v1::JobStatus>* writer) {
  std::shared_ptr<Job> job = FindJob(request->job_id());
  if (job == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no job with id '", request->job_id(), "'"));
  }
  int64_t version = -1;
  for (;;) {
    int64_t current = 0;
    const v1::JobStatus status = job->Snapshot(&current);
    if (current != version) {
      version = current;
      if (!writer->Write(status)) {
        return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher left");
      }
    }
    if (IsTerminal(status.state())) return grpc::Status::OK;
    if (context->IsCancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED, "the watcher left");
    }
    // At most four updates per second, however fast batches finish.
    absl::SleepFor(absl::Milliseconds(250));
    job->WaitForChange(version, absl::Seconds(1));
  }
}

grpc::Status CoordinatorServiceImpl::HandleGetJobStatus(
    const v1::GetJobStatusRequest* request, v1::JobStatus* response) {
  std::shared_ptr<Job> job = FindJob(request->job_id());
  if (job == nullptr) {
    return grpc::Status(
        grpc::StatusCode::NOT_FOUND,
        request->job_id().empty()
            ? std::string("no job has been started")
            : absl::StrCat("no job with id '", request->job_id(), "'"));
  }
  *response = job->Snapshot(nullptr);
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::HandleStopJob(
    const v1::StopJobRequest* request) {
  std::shared_ptr<Job> job = FindJob(request->job_id());
  if (job == nullptr) {
    return grpc::Status(grpc::StatusCode::NOT_FOUND,
                        absl::StrCat("no job with id '", request->job_id(), "'"));
  }
  LOG(INFO) << "stop requested for job " << job->id();
  job->Stop("stopped by a StopJob call");
  return grpc::Status::OK;
}

grpc::Status CoordinatorServiceImpl::HandleReportBatch(
    const v1::BatchResult* request) {
  std::shared_ptr<Job> job = FindJob("");
  if (job == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "no job is running");
  }
  absl::Status status = job->Report(*request);
  if (!status.ok()) {
    LOG_EVERY_N(WARNING, 100) << "ReportBatch rejected (" << google::COUNTER
                              << " so far, 1 in 100 logged): " << status;
  }
  return ToGrpcStatus(status);
}

}  // namespace synthgrad
