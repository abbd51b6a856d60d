#include "services/coordinator/job.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "common/tensor_proto.h"
#include "glog/logging.h"
#include "services/rpc_sender.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

// Window over which samples_per_second is measured.
constexpr absl::Duration kRateWindow = absl::Seconds(5);
// How often the monitor polls each group, and the deadline of one poll.
constexpr absl::Duration kMonitorInterval = absl::Seconds(1);
constexpr auto kMonitorDeadline = std::chrono::seconds(2);
// Failed polls in a row after which a group counts as down.
constexpr int kMonitorFailuresToDown = 2;
// Bound on draining the batches in flight before a final checkpoint.
constexpr absl::Duration kFinalDrainTimeout = absl::Seconds(5);
// Gap left between the batch ids of a checkpoint and those sent after a
// coordinator resumes from it, so no id sent before the coordinator stopped
// is used again.
constexpr int64_t kResumeBatchIdGap = int64_t{1} << 32;

// Failures a recovery can repair: a group down or restarted, a call to one
// that does not go through, or results that stopped coming.
bool IsRecoverable(const absl::Status& status) {
  return absl::IsAborted(status) || absl::IsUnavailable(status) ||
         absl::IsDeadlineExceeded(status);
}

}  // namespace

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_STOPPED;
}

Job::Job(std::string id, int job_number, v1::JobSpec spec, TrainTestData data,
         Options options, CoordinatorMetrics* metrics)
    : id_(std::move(id)),
      spec_(std::move(spec)),
      data_(std::move(data)),
      options_(std::move(options)),
      fingerprint_(SpecFingerprint(spec_)),
      batches_per_epoch_((data_.train.size() + spec_.batch_size() - 1) /
                         spec_.batch_size()),
      metrics_(metrics),
      started_at_(absl::Now()),
      next_batch_id_((int64_t{job_number} << 40) + 1) {
  metrics_->SetJobState(v1::JOB_STATE_STARTING);
  metrics_->SetEpoch(0);
  metrics_->SetBatchesInFlight(0);
  status_.set_job_id(id_);
  status_.set_state(v1::JOB_STATE_STARTING);
  status_.set_epochs(spec_.epochs());
  status_.set_mode(spec_.mode());
  status_.set_samples_total(data_.train.size() * spec_.epochs());
  status_.set_shards_per_epoch(static_cast<int32_t>(
      (batches_per_epoch_ + spec_.shard_batches() - 1) / spec_.shard_batches()));
  for (const v1::GroupSpec& group : spec_.groups()) {
    status_.add_group_addresses(group.address());
    stubs_.push_back(v1::LayerService::NewStub(MakeChannel(group.address())));
  }

  configuration_ids_.assign(spec_.groups_size(), 0);
  if (options_.resume_from.has_value()) {
    committed_ = *options_.resume_from;
    run_id_ = committed_.run_id();
    next_batch_id_ = std::max(next_batch_id_,
                              committed_.next_batch_id() + kResumeBatchIdGap);
    highest_fed_index_ = committed_.batches_fed() - committed_.batches_refed() - 1;
    status_.set_recoveries(committed_.recoveries());
    status_.set_batches_fed(committed_.batches_fed());
    status_.set_batches_refed(committed_.batches_refed());
  } else {
    committed_.set_epoch(1);
    std::random_device random;
    run_id_ = ((uint64_t{random()} << 32) | random()) | uint64_t{1};
    committed_.set_run_id(run_id_);
  }
  *committed_.mutable_spec() = spec_;
  absl::MutexLock lock(&mu_);
  RestoreCursor(committed_);
}

Job::~Job() {
  Stop("the coordinator is shutting down", /*final_checkpoint=*/true);
  if (thread_.joinable()) thread_.join();
  {
    absl::MutexLock lock(&mu_);
    monitor_exit_ = true;
  }
  if (monitor_thread_.joinable()) monitor_thread_.join();
}

void Job::Start() {
  thread_ = std::thread([this] { Run(); });
  monitor_thread_ = std::thread([this] { Monitor(); });
}

void Job::Wait() {
  if (thread_.joinable()) thread_.join();
}

void Job::Stop(const std::string& reason, bool final_checkpoint) {
  absl::MutexLock lock(&mu_);
  if (IsTerminal(status_.state()) || stop_requested_) return;
  if (checkpoint_call_ != nullptr) checkpoint_call_->TryCancel();
  stop_requested_ = true;
  final_checkpoint_requested_ = final_checkpoint;
  stop_reason_ = reason;
  ++version_;
}

bool Job::finished() const {
  absl::MutexLock lock(&mu_);
  return IsTerminal(status_.state());
}

v1::JobStatus Job::Snapshot(int64_t* version) const {
  absl::MutexLock lock(&mu_);
  if (version != nullptr) *version = version_;
  v1::JobStatus status = status_;
  status.set_elapsed_seconds(absl::ToDoubleSeconds(absl::Now() - started_at_));
  return status;
}

void Job::WaitForChange(int64_t version, absl::Duration timeout) const {
  absl::MutexLock lock(&mu_);
  auto changed = [this, version]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return version_ != version;
  };
  mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
}

absl::Status Job::Report(const v1::BatchResult& result) {
  absl::MutexLock lock(&mu_);
  auto it = in_flight_.find(result.batch_id());
  if (it == in_flight_.end()) {
    return absl::NotFoundError(absl::StrCat(
        "batch ", result.batch_id(), " is not in flight in job ", id_));
  }
  InFlight& batch = it->second;
  if (result.examples() != batch.rows) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", result.batch_id(), " reports ", result.examples(),
        " examples but has ", batch.rows));
  }

  if (result.backward_done()) {
    if (!batch.awaits_backward) {
      return absl::FailedPreconditionError(absl::StrCat(
          "batch ", result.batch_id(), " does not await a backward pass"));
    }
    batch.awaits_backward = false;
    ClosePartOfBatch(it);
    return absl::OkStatus();
  }

  absl::Status status = CheckResult(batch, result);
  if (!status.ok()) return status;
  const bool train = batch.train;
  batch.awaits_result = false;
  ClosePartOfBatch(it);

  PassTotals& totals = train ? train_totals_ : test_totals_;
  totals.loss_sum += result.loss() * result.examples();
  totals.correct += result.correct();
  totals.examples += result.examples();
  if (train) {
    ++batches_done_in_epoch_;
    status_.set_samples_done(status_.samples_done() + result.examples());
    metrics_->AddTrainingSamples(result.examples());
    UpdateShards();
    UpdateRate();
  }
  return absl::OkStatus();
}

void Job::Run() {
  absl::Status status;
  {
    const int64_t restore_id = committed_.checkpoint_id();
    status = ConfigureGroups(restore_id, next_batch_id_);
    if (status.ok() && restore_id > 0) {
      LOG(INFO) << "job " << id_ << " resumes from checkpoint " << restore_id
                << " at epoch " << committed_.epoch() << ", batch "
                << committed_.next_batch();
    }
  }
  if (status.ok()) {
    absl::MutexLock lock(&mu_);
    monitoring_ = true;
  }
  while (status.ok()) {
    status = TrainFromCursor();
    if (status.ok() || StopRequested() || !IsRecoverable(status)) break;
    // Recover() returns a recoverable error when the groups failed again
    // while it configured them; the loop then starts another recovery.
    do {
      status = Recover(status);
    } while (IsRecoverable(status) && !StopRequested());
  }

  bool final_checkpoint = false;
  {
    absl::MutexLock lock(&mu_);
    monitoring_ = false;
    final_checkpoint = stop_requested_ && final_checkpoint_requested_ &&
                       (status_.state() == v1::JOB_STATE_TRAINING ||
                        status_.state() == v1::JOB_STATE_EVALUATING) &&
                       checkpoints_enabled_;
  }
  if (final_checkpoint) {
    absl::Status drained =
        WaitForInFlightBelow(1, kFinalDrainTimeout, /*ignore_stop=*/true);
    if (drained.ok()) drained = WriteCheckpoint(kFinalDrainTimeout);
    if (drained.ok()) {
      LOG(INFO) << "job " << id_ << ": wrote a final checkpoint before stopping";
    } else {
      LOG(WARNING) << "job " << id_ << ": no final checkpoint: " << drained;
    }
  }

  if (status.ok() && options_.checkpoint_directory.has_value()) {
    // A resume of a finished job is rejected instead of training its last
    // batches again.
    v1::CoordinatorCheckpoint finished;
    {
      absl::MutexLock lock(&mu_);
      finished = CursorCheckpoint();
    }
    finished.set_checkpoint_id(committed_.checkpoint_id());
    finished.set_finished(true);
    WriteCoordinatorFile(finished);
  }

  absl::MutexLock lock(&mu_);
  if (status.ok()) {
    LOG(INFO) << "job " << id_ << " succeeded";
    status_.clear_message();
    SetState(v1::JOB_STATE_SUCCEEDED);
  } else if (stop_requested_) {
    LOG(INFO) << "job " << id_ << " stopped: " << stop_reason_;
    status_.set_message(stop_reason_);
    SetState(v1::JOB_STATE_STOPPED);
  } else {
    LOG(ERROR) << "job " << id_ << " failed: " << status;
    status_.set_message(std::string(status.message()));
    SetState(v1::JOB_STATE_FAILED);
  }
}

absl::Status Job::TrainFromCursor() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      if (epoch_ > spec_.epochs()) return absl::OkStatus();
    }
    absl::Status status = RunEpoch();
    if (!status.ok()) return status;
    bool more_epochs = false;
    {
      absl::MutexLock lock(&mu_);
      ++epoch_;
      next_batch_ = 0;
      train_totals_ = PassTotals();
      batches_done_in_epoch_ = 0;
      more_epochs = epoch_ <= spec_.epochs();
    }
    if (more_epochs && checkpoints_enabled_) {
      status = WriteCheckpoint(absl::Seconds(spec_.batch_timeout_seconds()));
      if (!status.ok()) return status;
    }
  }
}

absl::Status Job::ConfigureGroups(int64_t restore_checkpoint_id,
                                  int64_t min_batch_id) {
  std::vector<int> without_checkpoints;
  for (int i = 0; i < spec_.groups_size(); ++i) {
    v1::ConfigureRequest request;
    *request.mutable_spec() = spec_;
    request.set_group_index(i);
    request.set_coordinator_address(options_.advertise_address);
    request.set_restore_checkpoint_id(restore_checkpoint_id);
    request.set_min_batch_id(min_batch_id);
    request.set_checkpoint_run_id(run_id_);
    v1::ConfigureResponse response;
    SetMessage(absl::StrCat("configuring group ", i, " at ",
                            spec_.groups(i).address()));
    RetryPolicy policy;
    policy.total_timeout = std::chrono::seconds(spec_.batch_timeout_seconds());
    const grpc::Status status = CallWithRetry(
        absl::StrCat("Configure group ", i), spec_.groups(i).address(), policy,
        [&](grpc::ClientContext* context) {
          return stubs_[i]->Configure(context, request, &response);
        },
        [this] { return StopRequested(); });
    if (!status.ok()) {
      const std::string message = absl::StrCat(
          "cannot configure group ", i, " at ", spec_.groups(i).address(),
          ": ", status.error_message(), " (code ", status.error_code(), ")");
      // A group that does not respond may come back; a group that rejects
      // the request or its checkpoint will not.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE ||
          status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
        return absl::UnavailableError(
            absl::StrCat(message, "; is synthgrad_layer running there?"));
      }
      if (status.error_code() == grpc::StatusCode::NOT_FOUND ||
          status.error_code() == grpc::StatusCode::DATA_LOSS) {
        return absl::FailedPreconditionError(absl::StrCat(
            message, "; the group's checkpoint is missing or damaged. Start "
                     "synthgrad_layer with the --checkpoint_dir it had, or "
                     "start the job afresh"));
      }
      return absl::FailedPreconditionError(message);
    }
    {
      absl::MutexLock lock(&mu_);
      configuration_ids_[i] = response.configuration_id();
    }
    if (!response.checkpoints_enabled()) without_checkpoints.push_back(i);
    LOG(INFO) << "job " << id_ << ": configured group " << i << " at "
              << spec_.groups(i).address() << " with "
              << response.parameter_count() << " parameters at step "
              << response.step();
  }
  checkpoints_enabled_ =
      spec_.checkpoint_interval_shards() > 0 && without_checkpoints.empty();
  if (spec_.checkpoint_interval_shards() > 0 && !without_checkpoints.empty()) {
    LOG(WARNING) << "job " << id_ << ": checkpoints are off because group(s) "
                 << absl::StrJoin(without_checkpoints, ", ")
                 << " run without --checkpoint_dir; a recovery restarts the "
                    "job from its first batch";
  }
  SetMessage("");
  return absl::OkStatus();
}

absl::Status Job::RunEpoch() {
  const absl::Time epoch_start = absl::Now();
  int epoch = 0;
  {
    absl::MutexLock lock(&mu_);
    epoch = epoch_;
    status_.set_epoch(epoch);
    test_totals_ = PassTotals();
    UpdateShards();
    metrics_->SetEpoch(epoch);
    SetState(v1::JOB_STATE_TRAINING);
  }

  absl::Status status = SendTrainingPass();
  if (!status.ok()) return status;

  {
    absl::MutexLock lock(&mu_);
    SetState(v1::JOB_STATE_EVALUATING);
  }
  status = SendTestPass();
  if (!status.ok()) return status;
  const std::vector<v1::GroupStatus> groups = GroupStatuses();

  absl::MutexLock lock(&mu_);
  // The last shard may hold fewer batches; it is finished too.
  status_.set_shard(status_.shards_per_epoch());
  v1::EpochResult* result = status_.add_epochs_done();
  for (const v1::GroupStatus& group : groups) *result->add_groups() = group;
  result->set_epoch(epoch);
  result->set_train_loss(train_totals_.mean_loss());
  result->set_train_accuracy(train_totals_.accuracy());
  result->set_train_examples(train_totals_.examples);
  result->set_test_loss(test_totals_.mean_loss());
  result->set_test_accuracy(test_totals_.accuracy());
  result->set_seconds(absl::ToDoubleSeconds(absl::Now() - epoch_start));
  status_.set_shards_completed(static_cast<int64_t>(epoch) *
                               status_.shards_per_epoch());
  metrics_->SetEvaluation(result->test_accuracy(), result->test_loss());
  ++version_;
  LOG(INFO) << "job " << id_ << " epoch " << epoch << ": train loss "
            << result->train_loss() << ", test loss " << result->test_loss()
            << ", test accuracy " << result->test_accuracy() << ", "
            << result->seconds() << " s";
  return absl::OkStatus();
}

void Job::FillBatch(const Dataset& data, const std::vector<int64_t>& order,
                    size_t begin, v1::ForwardRequest* request) {
  const size_t end = std::min(order.size(), begin + spec_.batch_size());
  Matrix x;
  std::vector<int32_t> labels;
  GatherBatch(data, absl::MakeConstSpan(order.data() + begin, end - begin), &x,
              &labels);
  MatrixToProto(x, request->mutable_activations());
  request->mutable_labels()->Assign(labels.begin(), labels.end());
}

absl::Status Job::SendTrainingPass() {
  int epoch = 0;
  int64_t first = 0;
  {
    absl::MutexLock lock(&mu_);
    epoch = epoch_;
    first = next_batch_;
  }
  const std::vector<int64_t> order =
      EpochOrder(data_.train.size(), spec_.seed(), epoch);
  v1::ForwardRequest request;
  for (int64_t index = first; index < batches_per_epoch_; ++index) {
    if (index != first && CheckpointDue(index)) {
      absl::Status status =
          WriteCheckpoint(absl::Seconds(spec_.batch_timeout_seconds()));
      if (!status.ok()) return status;
    }
    absl::Status status = WaitForInFlightBelow(spec_.max_in_flight());
    if (!status.ok()) return status;

    FillBatch(data_.train, order, static_cast<size_t>(index) * spec_.batch_size(),
              &request);
    if (ProbeDue(index)) {
      // The probe needs every earlier update applied, like locked backprop.
      status = WaitForInFlightBelow(1);
      if (status.ok()) status = SendBatch(&request, v1::BATCH_MODE_PROBE);
      if (status.ok()) status = WaitForInFlightBelow(1);
      if (!status.ok()) return status;
    }
    status = SendBatch(&request, v1::BATCH_MODE_TRAIN);
    if (!status.ok()) return status;

    const int64_t fed_index = (epoch - 1) * batches_per_epoch_ + index;
    const bool refed = fed_index <= highest_fed_index_;
    highest_fed_index_ = std::max(highest_fed_index_, fed_index);
    metrics_->AddBatchFed(refed);
    absl::MutexLock lock(&mu_);
    next_batch_ = index + 1;
    status_.set_batches_fed(status_.batches_fed() + 1);
    if (refed) status_.set_batches_refed(status_.batches_refed() + 1);
  }
  return WaitForInFlightBelow(1);
}

absl::Status Job::SendTestPass() {
  std::vector<int64_t> order(data_.test.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  v1::ForwardRequest request;
  for (size_t begin = 0; begin < order.size(); begin += spec_.batch_size()) {
    absl::Status status = WaitForInFlightBelow(spec_.max_in_flight());
    if (!status.ok()) return status;
    FillBatch(data_.test, order, begin, &request);
    status = SendBatch(&request, v1::BATCH_MODE_EVAL);
    if (!status.ok()) return status;
  }
  return WaitForInFlightBelow(1);
}

bool Job::ProbeDue(int64_t index) const {
  const int interval = spec_.exact_gradient_probe_interval();
  return interval > 0 && spec_.mode() != v1::TRAINING_MODE_BACKPROP &&
         spec_.groups_size() > 1 && index % interval == 0;
}

bool Job::CheckpointDue(int64_t index) const {
  const int64_t interval =
      int64_t{spec_.checkpoint_interval_shards()} * spec_.shard_batches();
  return checkpoints_enabled_ && interval > 0 && index % interval == 0;
}

absl::Status Job::SendBatch(v1::ForwardRequest* request, v1::BatchMode mode) {
  const int64_t batch_id = next_batch_id_++;
  request->set_batch_id(batch_id);
  request->set_producer_step(0);
  request->set_mode(mode);
  {
    absl::MutexLock lock(&mu_);
    InFlight& batch = in_flight_[batch_id];
    batch.train = mode == v1::BATCH_MODE_TRAIN;
    batch.rows = request->activations().shape(0);
    // A probe only ends with the first group's backward_done notice.
    batch.awaits_result = mode != v1::BATCH_MODE_PROBE;
    // Locked backprop: the batch also waits for the first group's update,
    // so the next batch runs on the weights it produced.
    batch.awaits_backward =
        mode == v1::BATCH_MODE_PROBE ||
        (mode == v1::BATCH_MODE_TRAIN &&
         spec_.mode() == v1::TRAINING_MODE_BACKPROP && spec_.groups_size() > 1);
    metrics_->SetBatchesInFlight(static_cast<int>(in_flight_.size()));
  }

  v1::ForwardResponse response;
  const grpc::Status sent = CallWithRetry(
      absl::StrCat("Forward batch ", batch_id), spec_.groups(0).address(),
      RetryPolicy{},
      [&](grpc::ClientContext* context) {
        return stubs_[0]->Forward(context, *request, &response);
      },
      [this] { return ShouldAbandonCalls(); });
  if (sent.ok()) return absl::OkStatus();

  absl::MutexLock lock(&mu_);
  // The first group never accepted the batch, so nothing will report it.
  in_flight_.erase(batch_id);
  metrics_->SetBatchesInFlight(static_cast<int>(in_flight_.size()));
  if (!group_down_.empty()) return absl::AbortedError(group_down_);
  if (stop_requested_) return absl::CancelledError(stop_reason_);
  return absl::UnavailableError(absl::StrCat(
      "Forward of batch ", batch_id, " to group 0 at ",
      spec_.groups(0).address(), " failed: ", sent.error_message(), " (code ",
      sent.error_code(), ")"));
}

absl::Status Job::WriteCheckpoint(absl::Duration call_timeout) {
  const absl::Time start = absl::Now();
  absl::Status status = WaitForInFlightBelow(1, std::nullopt, /*ignore_stop=*/true);
  if (!status.ok()) return status;
  const int64_t checkpoint_id = committed_.checkpoint_id() + 1;

  // Last group first: each group's Checkpoint returns only after the
  // gradients it sent upstream were delivered, so the previous group's
  // checkpoint, taken next, includes them.
  for (int i = spec_.groups_size() - 1; i >= 0; --i) {
    v1::CheckpointRequest request;
    request.set_checkpoint_id(checkpoint_id);
    request.set_run_id(run_id_);
    v1::CheckpointResponse response;
    RetryPolicy policy;
    policy.attempt_timeout = absl::ToChronoMilliseconds(call_timeout);
    policy.total_timeout = absl::ToChronoMilliseconds(call_timeout);
    const grpc::Status sent = CallWithRetry(
        absl::StrCat("Checkpoint ", checkpoint_id, " of group ", i),
        spec_.groups(i).address(), policy,
        [&](grpc::ClientContext* context) {
          {
            absl::MutexLock lock(&mu_);
            checkpoint_call_ = context;
          }
          grpc::Status result = stubs_[i]->Checkpoint(context, request, &response);
          absl::MutexLock lock(&mu_);
          checkpoint_call_ = nullptr;
          return result;
        },
        [this] {
          absl::MutexLock lock(&mu_);
          return !group_down_.empty();
        });
    if (sent.ok()) continue;

    metrics_->AddCheckpointFailure();
    const std::string message = absl::StrCat(
        "checkpoint ", checkpoint_id, " of group ", i, " at ",
        spec_.groups(i).address(), " failed: ", sent.error_message(),
        " (code ", sent.error_code(), ")");
    {
      absl::MutexLock lock(&mu_);
      if (!group_down_.empty()) return absl::AbortedError(group_down_);
      if (stop_requested_ && sent.error_code() == grpc::StatusCode::CANCELLED) {
        return absl::CancelledError(stop_reason_);
      }
    }
    if (sent.error_code() == grpc::StatusCode::UNAVAILABLE) {
      return absl::UnavailableError(message);
    }
    if (sent.error_code() == grpc::StatusCode::FAILED_PRECONDITION) {
      return absl::FailedPreconditionError(absl::StrCat(
          message, "; start every synthgrad_layer with --checkpoint_dir or "
                   "set checkpoint_interval_shards to 0"));
    }
    // For example a full or stuck disk. Training goes on, and a recovery
    // uses the previous checkpoint.
    LOG(WARNING) << "job " << id_ << ": " << message
                 << "; training continues without this checkpoint";
    return absl::OkStatus();
  }

  v1::CoordinatorCheckpoint checkpoint;
  {
    absl::MutexLock lock(&mu_);
    checkpoint = CursorCheckpoint();
  }
  checkpoint.set_checkpoint_id(checkpoint_id);
  if (!WriteCoordinatorFile(checkpoint)) {
    metrics_->AddCheckpointFailure();
    return absl::OkStatus();
  }
  committed_ = std::move(checkpoint);
  const double seconds = absl::ToDoubleSeconds(absl::Now() - start);
  metrics_->AddCheckpoint(seconds);
  absl::MutexLock lock(&mu_);
  status_.set_checkpoint_id(checkpoint_id);
  ++version_;
  LOG(INFO) << "job " << id_ << ": checkpoint " << checkpoint_id
            << " at epoch " << committed_.epoch() << ", batch "
            << committed_.next_batch() << " took " << seconds << " s";
  return absl::OkStatus();
}

bool Job::WriteCoordinatorFile(const v1::CoordinatorCheckpoint& checkpoint) {
  if (!options_.checkpoint_directory.has_value()) return true;
  const CheckpointDirectory& directory = *options_.checkpoint_directory;
  absl::Status status = directory.CreateJobFolder(fingerprint_);
  const std::string path = directory.CoordinatorPath(fingerprint_);
  if (status.ok()) status = WriteCheckpointFile(path, checkpoint);
  if (!status.ok()) {
    LOG(WARNING) << "job " << id_ << ": cannot write the coordinator's part of "
                 << "checkpoint " << checkpoint.checkpoint_id() << " to "
                 << path << ": " << status
                 << "; training continues without this checkpoint";
    return false;
  }
  return true;
}

v1::CoordinatorCheckpoint Job::CursorCheckpoint() const {
  v1::CoordinatorCheckpoint checkpoint;
  *checkpoint.mutable_spec() = spec_;
  checkpoint.set_epoch(epoch_);
  checkpoint.set_next_batch(next_batch_);
  checkpoint.set_train_loss_sum(train_totals_.loss_sum);
  checkpoint.set_train_correct(train_totals_.correct);
  checkpoint.set_train_examples(train_totals_.examples);
  checkpoint.set_samples_done(status_.samples_done());
  *checkpoint.mutable_epochs_done() = status_.epochs_done();
  checkpoint.set_next_batch_id(next_batch_id_);
  checkpoint.set_recoveries(status_.recoveries());
  checkpoint.set_batches_fed(status_.batches_fed());
  checkpoint.set_batches_refed(status_.batches_refed());
  checkpoint.set_shards_completed(status_.shards_completed());
  checkpoint.set_run_id(run_id_);
  return checkpoint;
}

void Job::RestoreCursor(const v1::CoordinatorCheckpoint& checkpoint) {
  epoch_ = checkpoint.epoch();
  next_batch_ = checkpoint.next_batch();
  train_totals_.loss_sum = checkpoint.train_loss_sum();
  train_totals_.correct = checkpoint.train_correct();
  train_totals_.examples = checkpoint.train_examples();
  test_totals_ = PassTotals();
  // Results before next_batch_ all came back before the checkpoint.
  batches_done_in_epoch_ = next_batch_;
  status_.set_samples_done(checkpoint.samples_done());
  *status_.mutable_epochs_done() = checkpoint.epochs_done();
  status_.set_epoch(epoch_);
  status_.set_checkpoint_id(checkpoint.checkpoint_id());
  rate_points_.clear();
  UpdateShards();
  ++version_;
}

absl::Status Job::Recover(const absl::Status& cause) {
  int64_t abandoned = 0;
  {
    absl::MutexLock lock(&mu_);
    if (status_.recoveries() >= spec_.max_recoveries()) {
      return absl::ResourceExhaustedError(absl::StrCat(
          cause.message(), "; giving up after ", status_.recoveries(),
          " recoveries (max_recoveries ", spec_.max_recoveries(), ")"));
    }
    status_.set_recoveries(status_.recoveries() + 1);
    monitoring_ = false;
    group_down_.clear();
    abandoned = static_cast<int64_t>(in_flight_.size());
    in_flight_.clear();
    metrics_->SetBatchesInFlight(0);
    status_.set_message(absl::StrCat("recovering: ", cause.message()));
    SetState(v1::JOB_STATE_RECOVERING);
  }
  metrics_->AddRecovery();
  LOG(WARNING) << "job " << id_ << ": " << cause << "; abandoned " << abandoned
               << " batches in flight; recovering from checkpoint "
               << committed_.checkpoint_id() << " (epoch " << committed_.epoch()
               << ", batch " << committed_.next_batch() << ")";

  absl::Status status = WaitForGroups();
  if (!status.ok()) return status;
  // Batches sent before this point are fenced off: each group rejects
  // their ids from now on.
  status = ConfigureGroups(committed_.checkpoint_id(), next_batch_id_);
  if (!status.ok()) return status;

  absl::MutexLock lock(&mu_);
  RestoreCursor(committed_);
  status_.clear_message();
  monitoring_ = true;
  last_progress_ = absl::Now();
  LOG(INFO) << "job " << id_ << ": recovered; feeding again from epoch "
            << epoch_ << ", batch " << next_batch_;
  return absl::OkStatus();
}

absl::Status Job::WaitForGroups() {
  const absl::Time deadline =
      absl::Now() + absl::Seconds(spec_.recovery_timeout_seconds());
  for (int i = 0; i < spec_.groups_size(); ++i) {
    SetMessage(absl::StrCat("recovering: waiting for group ", i, " at ",
                            spec_.groups(i).address(), " to answer"));
    for (;;) {
      if (StopRequested()) return absl::CancelledError("stop requested");
      grpc::ClientContext context;
      context.set_deadline(std::chrono::system_clock::now() + kMonitorDeadline);
      v1::GroupStatus reply;
      const grpc::Status status =
          stubs_[i]->GetStatus(&context, v1::GetStatusRequest(), &reply);
      if (status.ok()) break;
      if (absl::Now() >= deadline) {
        return absl::FailedPreconditionError(absl::StrCat(
            "group ", i, " at ", spec_.groups(i).address(),
            " did not answer within ", spec_.recovery_timeout_seconds(),
            " s after going down: ", status.error_message(),
            "; restart synthgrad_layer there and resume the job"));
      }
      absl::SleepFor(absl::Milliseconds(250));
    }
  }
  return absl::OkStatus();
}

void Job::Monitor() {
  std::vector<int> failures(spec_.groups_size(), 0);
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithTimeout(absl::Condition(&monitor_exit_), kMonitorInterval);
      if (monitor_exit_ || IsTerminal(status_.state())) return;
      if (!monitoring_ || !group_down_.empty()) {
        std::fill(failures.begin(), failures.end(), 0);
        continue;
      }
    }
    for (int i = 0; i < spec_.groups_size(); ++i) {
      const GroupHealth health = CheckGroup(i);
      if (health.problem.empty()) {
        failures[i] = 0;
        continue;
      }
      // A restarted group is certain at once. One that does not respond gets
      // a second chance, so one slow poll does not roll the job back.
      if (!health.restarted && ++failures[i] < kMonitorFailuresToDown) continue;
      const std::string& problem = health.problem;
      absl::MutexLock lock(&mu_);
      if (!monitoring_ || !group_down_.empty()) break;
      group_down_ = absl::StrCat("group ", i, " at ", spec_.groups(i).address(),
                                 " ", problem);
      if (checkpoint_call_ != nullptr) checkpoint_call_->TryCancel();
      LOG(WARNING) << "job " << id_ << ": " << group_down_;
      ++version_;
      break;
    }
  }
}

Job::GroupHealth Job::CheckGroup(int index) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + kMonitorDeadline);
  v1::GroupStatus reply;
  const grpc::Status status =
      stubs_[index]->GetStatus(&context, v1::GetStatusRequest(), &reply);
  GroupHealth health;
  if (!status.ok()) {
    health.problem = absl::StrCat("does not answer: ", status.error_message(),
                                  " (code ", status.error_code(), ")");
  } else if (!reply.configured() || reply.group_index() != index) {
    health.restarted = true;
    health.problem = "is not configured for this job; it has restarted";
  } else {
    absl::MutexLock lock(&mu_);
    if (reply.configuration_id() != configuration_ids_[index]) {
      health.restarted = true;
      health.problem =
          "was configured again by another client; its state is no longer "
          "this job's";
    }
  }
  return health;
}

std::vector<v1::GroupStatus> Job::GroupStatuses() {
  std::vector<v1::GroupStatus> statuses(spec_.groups_size());
  for (int i = 0; i < spec_.groups_size(); ++i) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    const grpc::Status status =
        stubs_[i]->GetStatus(&context, v1::GetStatusRequest(), &statuses[i]);
    if (!status.ok()) {
      LOG(WARNING) << "job " << id_ << ": GetStatus of group " << i
                   << " failed: " << status.error_message();
      statuses[i].Clear();
    }
    statuses[i].set_group_index(i);
  }
  return statuses;
}

absl::Status Job::WaitForInFlightBelow(int limit,
                                       std::optional<absl::Duration> timeout,
                                       bool ignore_stop) {
  const absl::Duration no_progress_limit =
      timeout.value_or(absl::Seconds(spec_.batch_timeout_seconds()));
  absl::MutexLock lock(&mu_);
  last_progress_ = std::max(last_progress_, absl::Now() - absl::Seconds(1));
  if (timeout.has_value()) last_progress_ = absl::Now();
  auto ready = [this, limit, ignore_stop]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return (stop_requested_ && !ignore_stop) || !group_down_.empty() ||
           static_cast<int>(in_flight_.size()) < limit;
  };
  while (!ready()) {
    const absl::Time deadline = last_progress_ + no_progress_limit;
    if (mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) break;
    if (absl::Now() >= last_progress_ + no_progress_limit) {
      std::vector<int64_t> ids;
      for (const auto& [id, batch] : in_flight_) ids.push_back(id);
      std::sort(ids.begin(), ids.end());
      if (ids.size() > 8) ids.resize(8);
      return absl::DeadlineExceededError(absl::StrCat(
          "no batch result for ", absl::ToDoubleSeconds(no_progress_limit),
          " s; batches still in flight include ", absl::StrJoin(ids, ", "),
          "; check the logs of the groups at ",
          absl::StrJoin(status_.group_addresses(), ", ")));
    }
  }
  if (!group_down_.empty()) return absl::AbortedError(group_down_);
  if (stop_requested_ && !ignore_stop) return absl::CancelledError(stop_reason_);
  return absl::OkStatus();
}

absl::Status Job::CheckResult(const InFlight& batch,
                              const v1::BatchResult& result) {
  if (!batch.awaits_result) {
    return absl::FailedPreconditionError(absl::StrCat(
        "batch ", result.batch_id(), " has already reported its result"));
  }
  const v1::BatchMode expected_mode =
      batch.train ? v1::BATCH_MODE_TRAIN : v1::BATCH_MODE_EVAL;
  if (result.mode() != expected_mode) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", result.batch_id(), " reports mode ",
        static_cast<int>(result.mode()), " but was sent as ",
        v1::BatchMode_Name(expected_mode)));
  }
  if (result.correct() < 0 || result.correct() > result.examples()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", result.batch_id(), " reports ", result.correct(),
        " correct of ", result.examples(), " examples"));
  }
  if (!std::isfinite(result.loss()) || result.loss() < 0.0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch ", result.batch_id(), " reports loss ", result.loss(),
        "; a cross-entropy is finite and not negative"));
  }
  return absl::OkStatus();
}

void Job::ClosePartOfBatch(absl::flat_hash_map<int64_t, InFlight>::iterator it) {
  if (!it->second.awaits_result && !it->second.awaits_backward) {
    in_flight_.erase(it);
  }
  metrics_->SetBatchesInFlight(static_cast<int>(in_flight_.size()));
  last_progress_ = absl::Now();
  ++version_;
}

void Job::SetState(v1::JobState state) {
  status_.set_state(state);
  metrics_->SetJobState(state);
  ++version_;
}

void Job::SetMessage(std::string message) {
  absl::MutexLock lock(&mu_);
  status_.set_message(std::move(message));
  ++version_;
}

bool Job::StopRequested() const {
  absl::MutexLock lock(&mu_);
  return stop_requested_;
}

bool Job::ShouldAbandonCalls() const {
  absl::MutexLock lock(&mu_);
  return stop_requested_ || !group_down_.empty();
}

void Job::UpdateRate() {
  const absl::Time now = absl::Now();
  rate_points_.push_back({now, status_.samples_done()});
  while (rate_points_.size() > 2 &&
         now - rate_points_.front().first > kRateWindow) {
    rate_points_.pop_front();
  }
  const auto& [oldest_time, oldest_samples] = rate_points_.front();
  const double seconds = absl::ToDoubleSeconds(now - oldest_time);
  if (seconds > 0.0) {
    status_.set_samples_per_second((status_.samples_done() - oldest_samples) /
                                   seconds);
    metrics_->SetSamplesPerSecond(status_.samples_per_second());
  }
}

void Job::UpdateShards() {
  const int32_t shard =
      static_cast<int32_t>(batches_done_in_epoch_ / spec_.shard_batches());
  status_.set_shard(shard);
  status_.set_shards_completed(
      static_cast<int64_t>(epoch_ - 1) * status_.shards_per_epoch() +
      std::min(shard, status_.shards_per_epoch()));
}

}  // namespace synthgrad
