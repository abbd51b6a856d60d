#include "services/layer/layer_service.h"

#include <atomic>
#include <random>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/checkpoint.h"
#include "common/group.h"
#include "common/group_worker.h"
#include "common/job_spec.h"
#include "common/tensor_proto.h"
#include "glog/logging.h"
#include "services/rpc_sender.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

v1::BatchMode ToBatchMode(BatchKind kind) {
  switch (kind) {
    case BatchKind::kTrain:
      return v1::BATCH_MODE_TRAIN;
    case BatchKind::kEval:
      return v1::BATCH_MODE_EVAL;
    case BatchKind::kProbe:
      return v1::BATCH_MODE_PROBE;
  }
  return v1::BATCH_MODE_UNSPECIFIED;
}

// The caller has checked that `mode` is one of the three known modes.
BatchKind FromBatchMode(v1::BatchMode mode) {
  if (mode == v1::BATCH_MODE_EVAL) return BatchKind::kEval;
  if (mode == v1::BATCH_MODE_PROBE) return BatchKind::kProbe;
  return BatchKind::kTrain;
}

// Sends a group's messages over gRPC, one ordered sender per peer.
class GrpcTransport final : public Transport {
 public:
  GrpcTransport(const v1::JobSpec& spec, int index,
                const std::string& coordinator_address,
                std::chrono::microseconds link_latency) {
    const int capacity = 2 * spec.cache_capacity() + 8;
    if (index + 1 < spec.groups_size()) {
      const std::string& peer = spec.groups(index + 1).address();
      next_ = v1::LayerService::NewStub(MakeChannel(peer));
      next_sender_ = std::make_unique<RpcSender>(
          absl::StrCat("group ", index + 1, " at ", peer), capacity,
          RetryPolicy{}, nullptr, link_latency);
    }
    if (index > 0) {
      const std::string& peer = spec.groups(index - 1).address();
      previous_ = v1::LayerService::NewStub(MakeChannel(peer));
      previous_sender_ = std::make_unique<RpcSender>(
          absl::StrCat("group ", index - 1, " at ", peer), capacity,
          RetryPolicy{}, nullptr, link_latency);
    }
    if (index == 0 || index + 1 == spec.groups_size()) {
      coordinator_ =
          v1::CoordinatorService::NewStub(MakeChannel(coordinator_address));
      coordinator_sender_ = std::make_unique<RpcSender>(
          absl::StrCat("coordinator at ", coordinator_address), capacity,
          RetryPolicy{}, nullptr);
    }
  }

  // Waits until every message handed to the transport so far has been
  // delivered or given up. Returns false when `timeout` passes first.
  bool WaitUntilDelivered(absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    for (RpcSender* sender :
         {next_sender_.get(), previous_sender_.get(), coordinator_sender_.get()}) {
      if (sender != nullptr &&
          !sender->WaitUntilIdle(deadline - absl::Now())) {
        return false;
      }
    }
    return true;
  }

  // Stops every sender, so a compute thread blocked on a full queue returns.
  void Shutdown() {
    for (RpcSender* sender :
         {next_sender_.get(), previous_sender_.get(), coordinator_sender_.get()}) {
      if (sender != nullptr) sender->Shutdown();
    }
  }

  void SendForward(ForwardMessage message) override {
    auto request = std::make_shared<v1::ForwardRequest>();
    request->set_batch_id(message.batch_id);
    request->set_producer_step(message.producer_step);
    MatrixToProto(message.activations, request->mutable_activations());
    request->mutable_labels()->Add(message.labels.begin(), message.labels.end());
    request->set_mode(ToBatchMode(message.kind));
    next_sender_->Enqueue(
        absl::StrCat("Forward batch ", message.batch_id),
        [this, request](grpc::ClientContext* context) {
          v1::ForwardResponse response;
          return next_->Forward(context, *request, &response);
        });
  }

  void SendGradient(GradientMessage message) override {
    auto request = std::make_shared<v1::GradientRequest>();
    request->set_batch_id(message.batch_id);
    MatrixToProto(message.gradient, request->mutable_gradient());
    previous_sender_->Enqueue(
        absl::StrCat("Gradient batch ", message.batch_id),
        [this, request](grpc::ClientContext* context) {
          v1::GradientResponse response;
          return previous_->Gradient(context, *request, &response);
        });
  }

  void ReportBatch(const BatchReport& report) override {
    auto request = std::make_shared<v1::BatchResult>();
    request->set_batch_id(report.batch_id);
    request->set_mode(report.train ? v1::BATCH_MODE_TRAIN : v1::BATCH_MODE_EVAL);
    request->set_backward_done(report.backward_done);
    request->set_loss(report.mean_loss);
    request->set_correct(report.correct);
    request->set_examples(report.examples);
    coordinator_sender_->Enqueue(
        absl::StrCat("ReportBatch batch ", report.batch_id),
        [this, request](grpc::ClientContext* context) {
          v1::ReportBatchResponse response;
          return coordinator_->ReportBatch(context, *request, &response);
        });
  }

 private:
  std::unique_ptr<v1::LayerService::Stub> next_;
  std::unique_ptr<v1::LayerService::Stub> previous_;
  std::unique_ptr<v1::CoordinatorService::Stub> coordinator_;
  // Declared after the stubs so they stop before the stubs go away.
  std::unique_ptr<RpcSender> next_sender_;
  std::unique_ptr<RpcSender> previous_sender_;
  std::unique_ptr<RpcSender> coordinator_sender_;
};

}  // namespace

class LayerServiceImpl::Runtime {
 public:
  static absl::StatusOr<std::shared_ptr<Runtime>> Create(
      const v1::ConfigureRequest& request, GroupObserver* observer,
      std::chrono::microseconds link_latency) {
    auto runtime = std::shared_ptr<Runtime>(new Runtime());
    runtime->spec_ = request.spec();
    ApplyJobDefaults(&runtime->spec_);
    absl::Status status = ValidateJobSpec(runtime->spec_);
    if (!status.ok()) return status;
    const int index = request.group_index();
    if (index < 0 || index >= runtime->spec_.groups_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "group_index ", index, " is outside the spec's ",
          runtime->spec_.groups_size(), " groups"));
    }
    if ((index == 0 || index + 1 == runtime->spec_.groups_size()) &&
        request.coordinator_address().empty()) {
      return absl::InvalidArgumentError(
          "coordinator_address is empty; the first and last groups report to "
          "it");
    }

    runtime->transport_ = std::make_unique<GrpcTransport>(
        runtime->spec_, index, request.coordinator_address(), link_latency);
    absl::StatusOr<std::unique_ptr<Group>> group =
        Group::Create(runtime->spec_, index, runtime->transport_.get(), observer);
    if (!group.ok()) return group.status();
    runtime->worker_ = std::make_unique<GroupWorker>(
        *std::move(group), 2 * runtime->spec_.cache_capacity() + 8);
    runtime->fingerprint_ = SpecFingerprint(runtime->spec_);
    runtime->min_batch_id_ = request.min_batch_id();
    runtime->checkpoint_run_id_ = request.checkpoint_run_id();
    // Any value but 0 will do; the coordinator compares it for equality.
    std::random_device random;
    runtime->configuration_id_ =
        ((uint64_t{random()} << 32) | random()) | uint64_t{1};
    return runtime;
  }

  // Stops the senders first: the compute thread may be blocked handing a
  // message to a full sender, and the worker waits for that thread.
  ~Runtime() {
    if (transport_ != nullptr) transport_->Shutdown();
    worker_.reset();
    transport_.reset();
  }

  const Group& group() const { return worker_->group(); }
  GroupWorker& worker() { return *worker_; }
  GrpcTransport& transport() { return *transport_; }
  const v1::JobSpec& spec() const { return spec_; }
  uint64_t fingerprint() const { return fingerprint_; }
  int64_t min_batch_id() const { return min_batch_id_; }
  uint64_t checkpoint_run_id() const { return checkpoint_run_id_; }
  uint64_t configuration_id() const { return configuration_id_; }
  // Highest checkpoint id written or restored in this configuration.
  std::atomic<int64_t>& last_checkpoint_id() { return last_checkpoint_id_; }

 private:
  Runtime() = default;

  v1::JobSpec spec_;
  uint64_t fingerprint_ = 0;
  int64_t min_batch_id_ = 0;
  uint64_t checkpoint_run_id_ = 0;
  uint64_t configuration_id_ = 0;
  std::atomic<int64_t> last_checkpoint_id_{0};
  std::unique_ptr<GrpcTransport> transport_;
  // Declared last so the compute thread stops before the transport goes.
  std::unique_ptr<GroupWorker> worker_;
};

LayerServiceImpl::LayerServiceImpl(prometheus::Registry& registry,
                                   LayerServiceOptions options)
    : options_(options), rpc_metrics_(registry), group_metrics_(registry) {}
LayerServiceImpl::~LayerServiceImpl() = default;

std::shared_ptr<LayerServiceImpl::Runtime> LayerServiceImpl::CurrentRuntime() {
  absl::MutexLock lock(&mu_);
  if (runtime_ == nullptr) ++rejected_unconfigured_;
  return runtime_;
}

namespace {

grpc::Status NotConfigured() {
  return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                      "this group is not configured; the coordinator must "
                      "call Configure first");
}

absl::Status StaleBatch(int64_t batch_id, int64_t min_batch_id) {
  return absl::FailedPreconditionError(absl::StrCat(
      "batch ", batch_id, " was sent before this group's latest Configure; "
      "it accepts batch ids from ", min_batch_id));
}

grpc::Status Rejected(const char* method, const absl::Status& status) {
  LOG_EVERY_N(WARNING, 100) << method << " rejected (" << google::COUNTER
                            << " so far, 1 in 100 logged): " << status;
  return ToGrpcStatus(status);
}

}  // namespace

grpc::Status LayerServiceImpl::HandleConfigure(
    const v1::ConfigureRequest* request, v1::ConfigureResponse* response) {
  if (request->restore_checkpoint_id() < 0 || request->min_batch_id() < 0) {
    return grpc::Status(
        grpc::StatusCode::INVALID_ARGUMENT,
        absl::StrCat("restore_checkpoint_id ", request->restore_checkpoint_id(),
                     " and min_batch_id ", request->min_batch_id(),
                     " must not be negative"));
  }
  if (request->restore_checkpoint_id() > 0 &&
      !options_.checkpoint_directory.has_value()) {
    return grpc::Status(
        grpc::StatusCode::FAILED_PRECONDITION,
        absl::StrCat("cannot restore checkpoint ",
                     request->restore_checkpoint_id(),
                     ": this synthgrad_layer runs without --checkpoint_dir"));
  }
  absl::StatusOr<std::shared_ptr<Runtime>> runtime =
      Runtime::Create(*request, &group_metrics_, options_.link_latency);
  if (!runtime.ok()) {
    LOG(ERROR) << "Configure rejected: " << runtime.status();
    return ToGrpcStatus(runtime.status());
  }
  if (request->restore_checkpoint_id() > 0) {
    absl::Status status = Restore(**runtime, request->restore_checkpoint_id());
    if (!status.ok()) {
      LOG(ERROR) << "Configure cannot restore: " << status;
      return ToGrpcStatus(status);
    }
  }
  const Group& group = (*runtime)->group();
  LOG(INFO) << "configured group " << group.index() << " of "
            << (*runtime)->spec().groups_size() << " for job '"
            << (*runtime)->spec().name() << "': mode "
            << v1::TrainingMode_Name(group.mode()) << ", "
            << group.parameter_count() << " parameters, input width "
            << group.input_dim() << ", output width " << group.output_dim();
  response->set_parameter_count(group.parameter_count());
  response->set_step(group.stats().step);
  response->set_configuration_id((*runtime)->configuration_id());
  response->set_checkpoints_enabled(options_.checkpoint_directory.has_value());

  std::shared_ptr<Runtime> previous;
  {
    absl::MutexLock lock(&mu_);
    previous = std::move(runtime_);
    runtime_ = *std::move(runtime);
  }
  if (previous != nullptr && previous->worker().queue_depth() > 0) {
    // The coordinator configures again in the middle of a job only to
    // recover, and then it feeds the dropped batches again.
    LOG(WARNING) << "Configure replaced group " << previous->group().index()
                 << " while " << previous->worker().queue_depth()
                 << " events were still queued; they are dropped";
  }
  // The old compute thread stops here, unless a handler still uses the
  // runtime, so its last update cannot overwrite the reset step gauge.
  previous.reset();
  group_metrics_.ResetStep();
  return grpc::Status::OK;
}

grpc::Status LayerServiceImpl::HandleForward(const v1::ForwardRequest* request) {
  std::shared_ptr<Runtime> runtime = CurrentRuntime();
  if (runtime == nullptr) return NotConfigured();
  const Group& group = runtime->group();
  if (request->batch_id() < runtime->min_batch_id()) {
    runtime->worker().CountRejected(absl::StatusCode::kFailedPrecondition);
    return Rejected("Forward", StaleBatch(request->batch_id(), runtime->min_batch_id()));
  }

  if (request->mode() != v1::BATCH_MODE_TRAIN &&
      request->mode() != v1::BATCH_MODE_EVAL &&
      request->mode() != v1::BATCH_MODE_PROBE) {
    runtime->worker().CountRejected(absl::StatusCode::kInvalidArgument);
    return Rejected("Forward", absl::InvalidArgumentError(absl::StrCat(
                                   "batch ", request->batch_id(), " has mode ",
                                   static_cast<int>(request->mode()),
                                   "; use BATCH_MODE_TRAIN, BATCH_MODE_EVAL or BATCH_MODE_PROBE")));
  }
  TensorLimits limits;
  limits.cols = group.input_dim();
  limits.max_rows = group.max_batch_rows();
  absl::StatusOr<Matrix> activations = MatrixFromProto(
      request->activations(), limits,
      absl::StrCat("activations of batch ", request->batch_id()));
  if (!activations.ok()) {
    runtime->worker().CountRejected(activations.status().code());
    return Rejected("Forward", activations.status());
  }

  ForwardMessage message;
  message.batch_id = request->batch_id();
  message.producer_step = request->producer_step();
  message.activations = *std::move(activations);
  message.labels.assign(request->labels().begin(), request->labels().end());
  message.kind = FromBatchMode(request->mode());
  absl::Status status = runtime->worker().SubmitForward(std::move(message));
  if (!status.ok()) return Rejected("Forward", status);
  return grpc::Status::OK;
}

grpc::Status LayerServiceImpl::HandleGradient(
    const v1::GradientRequest* request) {
  std::shared_ptr<Runtime> runtime = CurrentRuntime();
  if (runtime == nullptr) return NotConfigured();
  const Group& group = runtime->group();
  if (request->batch_id() < runtime->min_batch_id()) {
    runtime->worker().CountRejected(absl::StatusCode::kFailedPrecondition);
    return Rejected("Gradient", StaleBatch(request->batch_id(), runtime->min_batch_id()));
  }

  TensorLimits limits;
  limits.cols = group.output_dim();
  limits.max_rows = group.max_batch_rows();
  absl::StatusOr<Matrix> gradient = MatrixFromProto(
      request->gradient(), limits,
      absl::StrCat("gradient of batch ", request->batch_id()));
  if (!gradient.ok()) {
    runtime->worker().CountRejected(gradient.status().code());
    return Rejected("Gradient", gradient.status());
  }

  absl::Status status = runtime->worker().SubmitGradient(
      {request->batch_id(), *std::move(gradient)});
  if (!status.ok()) return Rejected("Gradient", status);
  return grpc::Status::OK;
}

grpc::Status LayerServiceImpl::HandleGetStatus(v1::GroupStatus* response) {
  std::shared_ptr<Runtime> runtime;
  int64_t rejected_unconfigured = 0;
  {
    absl::MutexLock lock(&mu_);
    runtime = runtime_;
    rejected_unconfigured = rejected_unconfigured_;
  }
  response->set_rejected_requests(rejected_unconfigured);
  if (runtime == nullptr) return grpc::Status::OK;

  const Group& group = runtime->group();
  const GroupStats stats = group.stats();
  response->set_configured(true);
  response->set_configuration_id(runtime->configuration_id());
  response->set_group_index(group.index());
  response->set_mode(group.mode());
  response->set_step(stats.step);
  response->set_forward_batches(stats.forward_batches);
  response->set_forward_samples(stats.forward_samples);
  response->set_gradient_batches(stats.gradient_batches);
  response->set_cache_evictions(stats.cache_evictions);
  response->set_queue_depth(runtime->worker().queue_depth());
  if (stats.staleness_count > 0) {
    response->set_staleness_steps_mean(
        static_cast<double>(stats.staleness_steps_sum) / stats.staleness_count);
    response->set_staleness_seconds_mean(stats.staleness_seconds_sum /
                                         stats.staleness_count);
  }
  response->set_staleness_steps_max(stats.staleness_steps_max);
  response->set_staleness_steps_p50(stats.StalenessQuantile(0.5));
  response->set_staleness_steps_p99(stats.StalenessQuantile(0.99));
  response->set_synthetic_gradient_loss(stats.synthetic_gradient_loss);
  response->set_synthetic_gradient_cosine(stats.synthetic_gradient_cosine);
  response->set_training_loss(stats.training_loss);
  response->set_rejected_requests(rejected_unconfigured + stats.rejected_requests);
  response->set_probes(stats.probes);
  response->set_probe_cosine(stats.probe_cosine);
  response->set_probe_relative_error(stats.probe_relative_error);
  return grpc::Status::OK;
}

grpc::Status LayerServiceImpl::HandleGetParameters(
    v1::GetParametersResponse* response) {
  std::shared_ptr<Runtime> runtime = CurrentRuntime();
  if (runtime == nullptr) return NotConfigured();
  runtime->worker().RunOnComputeThread([response](Group& group) {
    for (const Matrix& p : group.parameters()) {
      MatrixToProto(p, response->add_parameters());
    }
    for (const Matrix& p : group.synthetic_gradient_parameters()) {
      MatrixToProto(p, response->add_synthetic_gradient_parameters());
    }
    response->set_step(group.stats().step);
  });
  return grpc::Status::OK;
}

absl::Status LayerServiceImpl::Restore(Runtime& runtime, int64_t checkpoint_id) {
  const CheckpointDirectory& directory = *options_.checkpoint_directory;
  const int index = runtime.group().index();
  const std::string path = directory.GroupPath(
      runtime.fingerprint(), runtime.checkpoint_run_id(), index, checkpoint_id);
  v1::GroupCheckpoint checkpoint;
  absl::Status status = ReadCheckpointFile(path, &checkpoint);
  if (!status.ok()) return status;
  if (checkpoint.checkpoint_id() != checkpoint_id) {
    return absl::DataLossError(
        absl::StrCat(path, " holds checkpoint ", checkpoint.checkpoint_id(),
                     ", not ", checkpoint_id));
  }
  runtime.worker().RunOnComputeThread([&](Group& group) {
    status = group.RestoreCheckpoint(checkpoint);
  });
  if (!status.ok()) {
    return absl::Status(status.code(),
                        absl::StrCat(path, ": ", status.message()));
  }
  runtime.last_checkpoint_id() = checkpoint_id;
  LOG(INFO) << "group " << index << " restored checkpoint " << checkpoint_id
            << " at step " << checkpoint.step() << " from " << path;
  return absl::OkStatus();
}

grpc::Status LayerServiceImpl::HandleCheckpoint(
    const v1::CheckpointRequest* request, v1::CheckpointResponse* response) {
  std::shared_ptr<Runtime> runtime = CurrentRuntime();
  if (runtime == nullptr) return NotConfigured();
  if (!options_.checkpoint_directory.has_value()) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION,
                        "this synthgrad_layer runs without --checkpoint_dir, "
                        "so it cannot write checkpoints");
  }
  if (request->checkpoint_id() <= 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("checkpoint_id must be positive, got ",
                                     request->checkpoint_id()));
  }
  if (request->run_id() != runtime->checkpoint_run_id()) {
    LOG(WARNING) << "Checkpoint " << request->checkpoint_id()
                 << " rejected: its run id is not this group's";
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "run_id differs from the checkpoint_run_id this group "
                        "was configured with; only the job's coordinator may "
                        "request checkpoints");
  }
  const int64_t latest = runtime->last_checkpoint_id();
  if (request->checkpoint_id() <= latest) {
    return grpc::Status(
        grpc::StatusCode::OUT_OF_RANGE,
        absl::StrCat("checkpoint_id ", request->checkpoint_id(),
                     " is not above ", latest,
                     ", the latest checkpoint of this configuration"));
  }
  // A write that hangs (a stuck disk, say) must not queue every later
  // request behind it.
  if (!checkpoint_mu_.TryLock()) {
    return grpc::Status(grpc::StatusCode::ABORTED,
                        absl::StrCat("checkpoint ", request->checkpoint_id(),
                                     ": another checkpoint is still being "
                                     "written"));
  }
  absl::Cleanup unlock = [this] { checkpoint_mu_.Unlock(); };
  const absl::Time start = absl::Now();

  // The snapshot runs after every event queued so far. Waiting for the
  // outgoing messages afterwards means that a checkpoint taken next on the
  // previous group includes the gradients this group sent it.
  v1::GroupCheckpoint checkpoint;
  runtime->worker().RunOnComputeThread(
      [&checkpoint](Group& group) { group.SaveCheckpoint(&checkpoint); });
  checkpoint.set_checkpoint_id(request->checkpoint_id());
  if (!runtime->transport().WaitUntilDelivered(absl::Seconds(30))) {
    return grpc::Status(
        grpc::StatusCode::UNAVAILABLE,
        absl::StrCat("checkpoint ", request->checkpoint_id(),
                     ": this group's outgoing messages were not delivered "
                     "within 30 s; is the next or previous group down?"));
  }

  const CheckpointDirectory& directory = *options_.checkpoint_directory;
  const int index = runtime->group().index();
  absl::Status status = directory.CreateGroupFolder(
      runtime->fingerprint(), runtime->checkpoint_run_id(), index);
  const std::string path =
      directory.GroupPath(runtime->fingerprint(), runtime->checkpoint_run_id(),
                          index, request->checkpoint_id());
  if (status.ok()) status = WriteCheckpointFile(path, checkpoint);
  if (!status.ok()) {
    LOG(ERROR) << "checkpoint " << request->checkpoint_id() << " failed: "
               << status;
    return ToGrpcStatus(status);
  }
  runtime->last_checkpoint_id() = request->checkpoint_id();
  directory.PruneGroupCheckpoints(runtime->fingerprint(),
                                  runtime->checkpoint_run_id(), index,
                                  kKeptCheckpoints);
  response->set_step(checkpoint.step());
  response->set_bytes(static_cast<int64_t>(checkpoint.ByteSizeLong()));
  LOG(INFO) << "group " << index << " wrote checkpoint "
            << request->checkpoint_id() << " at step " << checkpoint.step()
            << " (" << response->bytes() << " bytes) to " << path << " in "
            << absl::ToDoubleSeconds(absl::Now() - start) << " s";
  return grpc::Status::OK;
}

}  // namespace synthgrad
