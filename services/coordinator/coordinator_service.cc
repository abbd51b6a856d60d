#include "services/coordinator/coordinator_service.h"

#include <algorithm>
#include <cmath>
#include <chrono>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/dataset.h"
#include "common/job_spec.h"
#include "common/tensor_proto.h"
#include "glog/logging.h"
#include "services/rpc_sender.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_STATE_SUCCEEDED || state == v1::JOB_STATE_FAILED ||
         state == v1::JOB_STATE_STOPPED;
}

// Window over which samples_per_second is measured.
constexpr absl::Duration kRateWindow = absl::Seconds(5);

// Sums of the batch results of one pass over a data set.
struct PassTotals {
  double loss_sum = 0.0;  // Sum of per-example losses.
  int64_t correct = 0;
  int64_t examples = 0;

  double mean_loss() const { return examples > 0 ? loss_sum / examples : 0.0; }
  double accuracy() const {
    return examples > 0 ? static_cast<double>(correct) / examples : 0.0;
  }
};

}  // namespace

class CoordinatorServiceImpl::Job {
  struct InFlight {
    bool train = false;
    // Examples in the batch; every report must match.
    int64_t rows = 0;
    // Waiting for the last group's result.
    bool awaits_result = false;
    // Waiting for the first group's backward_done notice (locked backprop,
    // probes).
    bool awaits_backward = false;
  };

 public:
  // `metrics` must outlive the job.
  Job(std::string id, int job_number, v1::JobSpec spec, TrainTestData data,
      std::string advertise_address, CoordinatorMetrics* metrics)
      : id_(std::move(id)),
        spec_(std::move(spec)),
        data_(std::move(data)),
        advertise_address_(std::move(advertise_address)),
        metrics_(metrics),
        started_at_(absl::Now()),
        next_batch_id_((int64_t{job_number} << 40) + 1) {
    metrics_->SetJobState(v1::JOB_STATE_STARTING);
    metrics_->SetEpoch(0);
    metrics_->SetBatchesInFlight(0);
    const int64_t batches_per_epoch =
        (data_.train.size() + spec_.batch_size() - 1) / spec_.batch_size();
    status_.set_job_id(id_);
    status_.set_state(v1::JOB_STATE_STARTING);
    status_.set_epochs(spec_.epochs());
    status_.set_mode(spec_.mode());
    status_.set_samples_total(data_.train.size() * spec_.epochs());
    status_.set_shards_per_epoch(static_cast<int32_t>(
        (batches_per_epoch + spec_.shard_batches() - 1) / spec_.shard_batches()));
    for (const v1::GroupSpec& group : spec_.groups()) {
      status_.add_group_addresses(group.address());
      stubs_.push_back(v1::LayerService::NewStub(MakeChannel(group.address())));
    }
  }

  ~Job() {
    Stop("the coordinator is shutting down");
    if (thread_.joinable()) thread_.join();
  }

  const std::string& id() const { return id_; }

  void Start() {
    thread_ = std::thread([this] { Run(); });
  }

  // Asks the job thread to stop; the state becomes STOPPED unless the job
  // has already ended.
  void Stop(const std::string& reason) ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (IsTerminal(status_.state()) || stop_requested_) return;
    stop_requested_ = true;
    stop_reason_ = reason;
    ++version_;
  }

  bool finished() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return IsTerminal(status_.state());
  }

  v1::JobStatus Snapshot(int64_t* version) const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    if (version != nullptr) *version = version_;
    v1::JobStatus status = status_;
    status.set_elapsed_seconds(absl::ToDoubleSeconds(absl::Now() - started_at_));
    return status;
  }

  // Waits until the status changes past `version` or `timeout` passes.
  void WaitForChange(int64_t version, absl::Duration timeout) const
      ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    auto changed = [this, version]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return version_ != version;
    };
    mu_.AwaitWithTimeout(absl::Condition(&changed), timeout);
  }

  // Records the result of a batch in flight, or the first group's
  // backward_done notice for it. Fails with NOT_FOUND for a batch this job
  // is not waiting for, and with INVALID_ARGUMENT or FAILED_PRECONDITION for
  // a report that does not fit the batch.
  absl::Status Report(const v1::BatchResult& result) ABSL_LOCKS_EXCLUDED(mu_) {
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
      status_.set_shard(static_cast<int32_t>(batches_done_in_epoch_ /
                                             spec_.shard_batches()));
      UpdateRate();
    }
    return absl::OkStatus();
  }

 private:
  void Run() {
    absl::Status status = ConfigureGroups();
    for (int epoch = 1; status.ok() && epoch <= spec_.epochs(); ++epoch) {
      status = RunEpoch(epoch);
    }

    absl::MutexLock lock(&mu_);
    if (status.ok()) {
      LOG(INFO) << "job " << id_ << " succeeded";
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

  // Sends Configure to every group, retrying while a group is still starting.
  absl::Status ConfigureGroups() {
    for (int i = 0; i < spec_.groups_size(); ++i) {
      v1::ConfigureRequest request;
      *request.mutable_spec() = spec_;
      request.set_group_index(i);
      request.set_coordinator_address(advertise_address_);
      v1::ConfigureResponse response;
      {
        absl::MutexLock lock(&mu_);
        status_.set_message(absl::StrCat("configuring group ", i, " at ",
                                         spec_.groups(i).address()));
        ++version_;
      }
      RetryPolicy policy;
      policy.total_timeout = std::chrono::seconds(spec_.batch_timeout_seconds());
      const grpc::Status status = CallWithRetry(
          absl::StrCat("Configure group ", i), spec_.groups(i).address(), policy,
          [&](grpc::ClientContext* context) {
            return stubs_[i]->Configure(context, request, &response);
          },
          [this] { return StopRequested(); });
      if (!status.ok()) {
        return absl::UnavailableError(absl::StrCat(
            "cannot configure group ", i, " at ", spec_.groups(i).address(),
            ": ", status.error_message(), " (code ", status.error_code(),
            "); is synthgrad_layer running there?"));
      }
      LOG(INFO) << "job " << id_ << ": configured group " << i << " at "
                << spec_.groups(i).address() << " with "
                << response.parameter_count() << " parameters";
    }
    absl::MutexLock lock(&mu_);
    status_.clear_message();
    ++version_;
    return absl::OkStatus();
  }

  absl::Status RunEpoch(int epoch) {
    const absl::Time epoch_start = absl::Now();
    {
      absl::MutexLock lock(&mu_);
      status_.set_epoch(epoch);
      status_.set_shard(0);
      train_totals_ = PassTotals();
      test_totals_ = PassTotals();
      batches_done_in_epoch_ = 0;
      metrics_->SetEpoch(epoch);
      SetState(v1::JOB_STATE_TRAINING);
    }

    const std::vector<int64_t> order =
        EpochOrder(data_.train.size(), spec_.seed(), epoch);
    absl::Status status = SendPass(data_.train, order, /*train=*/true);
    if (!status.ok()) return status;

    {
      absl::MutexLock lock(&mu_);
      SetState(v1::JOB_STATE_EVALUATING);
    }
    std::vector<int64_t> test_order(data_.test.size());
    for (size_t i = 0; i < test_order.size(); ++i) test_order[i] = i;
    status = SendPass(data_.test, test_order, /*train=*/false);
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
    result->set_test_loss(test_totals_.mean_loss());
    result->set_test_accuracy(test_totals_.accuracy());
    result->set_seconds(absl::ToDoubleSeconds(absl::Now() - epoch_start));
    metrics_->SetEvaluation(result->test_accuracy(), result->test_loss());
    ++version_;
    LOG(INFO) << "job " << id_ << " epoch " << epoch << ": train loss "
              << result->train_loss() << ", test loss " << result->test_loss()
              << ", test accuracy " << result->test_accuracy() << ", "
              << result->seconds() << " s";
    return absl::OkStatus();
  }

  // Sends every batch of `order` to the first group and waits until all
  // results are back.
  absl::Status SendPass(const Dataset& data, const std::vector<int64_t>& order,
                        bool train) {
    Matrix x;
    std::vector<int32_t> labels;
    v1::ForwardRequest request;
    for (size_t begin = 0; begin < order.size(); begin += spec_.batch_size()) {
      absl::Status status = WaitForInFlightBelow(spec_.max_in_flight());
      if (!status.ok()) return status;

      const size_t end = std::min(order.size(), begin + spec_.batch_size());
      GatherBatch(data, absl::MakeConstSpan(order.data() + begin, end - begin),
                  &x, &labels);
      MatrixToProto(x, request.mutable_activations());
      request.mutable_labels()->Assign(labels.begin(), labels.end());

      if (train && ProbeDue(begin / spec_.batch_size())) {
        // The probe needs every earlier update applied, like locked backprop.
        status = WaitForInFlightBelow(1);
        if (status.ok()) status = SendBatch(&request, v1::BATCH_MODE_PROBE);
        if (status.ok()) status = WaitForInFlightBelow(1);
        if (!status.ok()) return status;
      }
      status = SendBatch(&request, train ? v1::BATCH_MODE_TRAIN : v1::BATCH_MODE_EVAL);
      if (!status.ok()) return status;
    }
    return WaitForInFlightBelow(1);
  }

  // True when training batch `index` of an epoch is preceded by an
  // exact-gradient probe.
  bool ProbeDue(size_t index) const {
    const int interval = spec_.exact_gradient_probe_interval();
    return interval > 0 && spec_.mode() != v1::TRAINING_MODE_BACKPROP &&
           spec_.groups_size() > 1 && index % interval == 0;
  }

  // Sends `request`, whose activations and labels are set, to the first
  // group as a new batch in `mode`.
  absl::Status SendBatch(v1::ForwardRequest* request, v1::BatchMode mode) {
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
        [this] { return StopRequested(); });
    if (!sent.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "Forward of batch ", batch_id, " to group 0 at ",
          spec_.groups(0).address(), " failed: ", sent.error_message(),
          " (code ", sent.error_code(), ")"));
    }
    return absl::OkStatus();
  }

  // Reads every group's status; an unreachable group gets an entry with
  // only its index set.
  std::vector<v1::GroupStatus> GroupStatuses() {
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

  // Waits until fewer than `limit` batches are in flight. Fails when a stop
  // is requested or no result arrives for batch_timeout_seconds.
  absl::Status WaitForInFlightBelow(int limit) ABSL_LOCKS_EXCLUDED(mu_) {
    const absl::Duration timeout = absl::Seconds(spec_.batch_timeout_seconds());
    absl::MutexLock lock(&mu_);
    last_progress_ = std::max(last_progress_, absl::Now() - absl::Seconds(1));
    auto ready = [this, limit]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return stop_requested_ || static_cast<int>(in_flight_.size()) < limit;
    };
    while (!ready()) {
      const absl::Time deadline = last_progress_ + timeout;
      if (mu_.AwaitWithDeadline(absl::Condition(&ready), deadline)) break;
      if (absl::Now() >= last_progress_ + timeout) {
        std::vector<int64_t> ids;
        for (const auto& [id, batch] : in_flight_) ids.push_back(id);
        std::sort(ids.begin(), ids.end());
        if (ids.size() > 8) ids.resize(8);
        return absl::DeadlineExceededError(absl::StrCat(
            "no batch result for ", spec_.batch_timeout_seconds(),
            " s; batches still in flight include ", absl::StrJoin(ids, ", "),
            "; check the logs of the groups at ",
            absl::StrJoin(status_.group_addresses(), ", ")));
      }
    }
    if (stop_requested_) return absl::CancelledError(stop_reason_);
    return absl::OkStatus();
  }

  // Checks a last-group result against the batch it reports on.
  static absl::Status CheckResult(const InFlight& batch,
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

  // Drops the batch once neither its result nor its backward pass is still
  // awaited, and records the progress.
  void ClosePartOfBatch(absl::flat_hash_map<int64_t, InFlight>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!it->second.awaits_result && !it->second.awaits_backward) {
      in_flight_.erase(it);
    }
    metrics_->SetBatchesInFlight(static_cast<int>(in_flight_.size()));
    last_progress_ = absl::Now();
    ++version_;
  }

  void SetState(v1::JobState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    status_.set_state(state);
    metrics_->SetJobState(state);
    ++version_;
  }

  bool StopRequested() const ABSL_LOCKS_EXCLUDED(mu_) {
    absl::MutexLock lock(&mu_);
    return stop_requested_;
  }

  void UpdateRate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
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

  const std::string id_;
  const v1::JobSpec spec_;
  const TrainTestData data_;
  const std::string advertise_address_;
  CoordinatorMetrics* const metrics_;
  const absl::Time started_at_;
  std::vector<std::unique_ptr<v1::LayerService::Stub>> stubs_;
  // Job thread only. Ids start at job_number * 2^40, so a late report from
  // an earlier job on the same coordinator never matches a batch of this one.
  int64_t next_batch_id_;

  mutable absl::Mutex mu_;
  v1::JobStatus status_ ABSL_GUARDED_BY(mu_);
  // Bumped at every change of status_, for WatchJob.
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<int64_t, InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  PassTotals train_totals_ ABSL_GUARDED_BY(mu_);
  PassTotals test_totals_ ABSL_GUARDED_BY(mu_);
  int64_t batches_done_in_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_progress_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::deque<std::pair<absl::Time, int64_t>> rate_points_ ABSL_GUARDED_BY(mu_);

  std::thread thread_;
};

CoordinatorServiceImpl::CoordinatorServiceImpl(prometheus::Registry& registry)
    : rpc_metrics_(registry), metrics_(registry) {}

void CoordinatorServiceImpl::SetAdvertiseAddress(std::string address) {
  absl::MutexLock lock(&mu_);
  advertise_address_ = std::move(address);
}

CoordinatorServiceImpl::~CoordinatorServiceImpl() = default;

std::shared_ptr<CoordinatorServiceImpl::Job> CoordinatorServiceImpl::FindJob(
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
    job = std::make_shared<Job>(id, job_count_, std::move(spec), *std::move(data),
                                advertise_address_, &metrics_);
    job_ = job;
  }
  LOG(INFO) << "starting job " << job->id() << " with "
            << response->train_examples() << " training and "
            << response->test_examples() << " test examples";
  response->set_job_id(job->id());
  job->Start();
  return grpc::Status::OK;
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
