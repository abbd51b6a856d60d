#include "common/group.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/job_spec.h"
#include "common/loss.h"
#include "common/tensor_proto.h"
#include "glog/logging.h"

namespace synthgrad {
namespace {

constexpr double kAverageFactor = 0.05;

void UpdateAverage(double value, double* average) {
  *average = std::isnan(*average)
                 ? value
                 : (1.0 - kAverageFactor) * *average + kAverageFactor * value;
}

// Seeds of the group's network and synthetic-gradient model, distinct per
// group so that groups with equal shapes do not start equal.
uint64_t NetworkSeed(uint64_t seed, int index) {
  return seed * 1000003ULL + 2ULL * static_cast<uint64_t>(index) + 1ULL;
}
uint64_t SyntheticGradientSeed(uint64_t seed, int index) {
  return seed * 1000003ULL + 2ULL * static_cast<uint64_t>(index) + 2ULL;
}

GroupObserver& NoOpObserver() {
  static GroupObserver* const observer = new GroupObserver();
  return *observer;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Group>> Group::Create(const v1::JobSpec& spec,
                                                     int index,
                                                     Transport* transport,
                                                     GroupObserver* observer) {
  if (index < 0 || index >= spec.groups_size()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group_index ", index, " is outside the spec's ", spec.groups_size(),
        " groups"));
  }
  const v1::GroupSpec& group = spec.groups(index);
  absl::StatusOr<Network> network = Network::Create(
      GroupInputDim(spec, index),
      std::vector<v1::LayerSpec>(group.layers().begin(), group.layers().end()),
      NetworkSeed(spec.seed(), index), /*zero_last_linear=*/false);
  if (!network.ok()) return network.status();

  absl::StatusOr<std::unique_ptr<Optimizer>> optimizer =
      Optimizer::Create(spec.optimizer());
  if (!optimizer.ok()) return optimizer.status();

  std::optional<SyntheticGradientModel> synthetic_gradient;
  const bool last = index == spec.groups_size() - 1;
  if (!last && spec.mode() != v1::TRAINING_MODE_BACKPROP) {
    const int conditioning =
        spec.mode() == v1::TRAINING_MODE_CDNI ? spec.num_classes() : 0;
    absl::StatusOr<SyntheticGradientModel> model =
        SyntheticGradientModel::Create(network->output_dim(), conditioning,
                                       spec.synthetic_gradient(),
                                       SyntheticGradientSeed(spec.seed(), index));
    if (!model.ok()) return model.status();
    synthetic_gradient.emplace(*std::move(model));
  }
  return std::unique_ptr<Group>(new Group(spec, index, *std::move(network),
                                          *std::move(optimizer),
                                          std::move(synthetic_gradient),
                                          transport, observer));
}

Group::Group(const v1::JobSpec& spec, int index, Network network,
             std::unique_ptr<Optimizer> optimizer,
             std::optional<SyntheticGradientModel> synthetic_gradient,
             Transport* transport, GroupObserver* observer)
    : index_(index),
      group_count_(spec.groups_size()),
      mode_(spec.mode()),
      num_classes_(spec.num_classes()),
      cache_capacity_(spec.cache_capacity()),
      max_batch_rows_(spec.batch_size()),
      transport_(transport),
      observer_(observer != nullptr ? observer : &NoOpObserver()),
      network_(std::move(network)),
      optimizer_(std::move(optimizer)),
      synthetic_gradient_(std::move(synthetic_gradient)) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  stats_.synthetic_gradient_loss = nan;
  stats_.synthetic_gradient_cosine = nan;
  stats_.training_loss = nan;
  stats_.probe_cosine = nan;
  stats_.probe_relative_error = nan;
}

absl::Status Group::AcceptForward(const ForwardMessage& message) {
  const Matrix& x = message.activations;
  absl::Status status;
  if (x.rows() < 1 || x.rows() > max_batch_rows_) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "batch ", message.batch_id, " has ", x.rows(),
        " rows; expected 1 to the job's batch_size ", max_batch_rows_));
  } else if (x.cols() != input_dim()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "batch ", message.batch_id, " activations have ", x.cols(),
        " columns but group ", index_, " takes ", input_dim()));
  } else if (!AllFinite(x)) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "batch ", message.batch_id, " activations contain NaN or Inf"));
  } else if (static_cast<int64_t>(message.labels.size()) != x.rows()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "batch ", message.batch_id, " has ", message.labels.size(),
        " labels for ", x.rows(), " rows"));
  } else {
    auto bad = std::find_if(
        message.labels.begin(), message.labels.end(),
        [this](int32_t label) { return label < 0 || label >= num_classes_; });
    if (bad != message.labels.end()) {
      status = absl::InvalidArgumentError(absl::StrCat(
          "batch ", message.batch_id, " label ", *bad, " at row ",
          bad - message.labels.begin(), " is outside [0, ", num_classes_, ")"));
    }
  }

  absl::MutexLock lock(&mu_);
  if (status.ok() && !in_flight_.insert(message.batch_id).second) {
    status = absl::AlreadyExistsError(absl::StrCat(
        "batch ", message.batch_id, " is already in flight at group ", index_));
  }
  if (!status.ok()) {
    ++stats_.rejected_requests;
    observer_->OnRejected(status.code());
  }
  return status;
}

absl::Status Group::AcceptGradient(const GradientMessage& message) {
  absl::MutexLock lock(&mu_);
  absl::Status status;
  auto it = awaiting_gradient_.find(message.batch_id);
  if (it == awaiting_gradient_.end()) {
    status = absl::NotFoundError(absl::StrCat(
        "batch ", message.batch_id, " is not awaiting a gradient at group ",
        index_, " (unknown, already received or evicted)"));
  } else if (message.gradient.rows() != it->second ||
             message.gradient.cols() != output_dim()) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "gradient for batch ", message.batch_id, " has shape ",
        ShapeString(message.gradient), "; expected [", it->second, ", ",
        output_dim(), "]"));
  } else if (!AllFinite(message.gradient)) {
    status = absl::InvalidArgumentError(absl::StrCat(
        "gradient for batch ", message.batch_id, " contains NaN or Inf"));
  } else {
    awaiting_gradient_.erase(it);
  }
  if (!status.ok()) {
    ++stats_.rejected_requests;
    observer_->OnRejected(status.code());
  }
  return status;
}

void Group::HandleForward(ForwardMessage message) {
  const int64_t batch_id = message.batch_id;
  const int64_t rows = message.activations.rows();
  const bool train = message.kind == BatchKind::kTrain;
  if (message.kind != BatchKind::kProbe) {
    absl::MutexLock lock(&mu_);
    ++stats_.forward_batches;
    stats_.forward_samples += rows;
  }
  if (message.kind != BatchKind::kProbe) observer_->OnForward(train, rows);

  // Evaluation: forward only, no update and nothing cached.
  if (message.kind == BatchKind::kEval) {
    Matrix h = network_.Forward(message.activations, nullptr);
    if (is_last()) {
      LossResult loss = SoftmaxCrossEntropy(h, message.labels,
                                            /*want_gradient=*/false);
      transport_->ReportBatch({batch_id, false, false, loss.mean_loss,
                               loss.correct, static_cast<int>(rows)});
    } else {
      transport_->SendForward({batch_id, step_, std::move(h),
                               std::move(message.labels), BatchKind::kEval});
    }
    FinishBatch(batch_id);
    return;
  }

  Network::Trace trace;
  Matrix h = network_.Forward(message.activations, &trace);

  if (is_last()) {
    LossResult loss =
        SoftmaxCrossEntropy(h, message.labels, /*want_gradient=*/true);
    if (!train) {
      FinishProbe(batch_id, trace, loss.gradient);
      FinishBatch(batch_id);
      return;
    }
    Update(batch_id, trace, loss.gradient);
    {
      absl::MutexLock lock(&mu_);
      UpdateAverage(loss.mean_loss, &stats_.training_loss);
    }
    observer_->OnTrainingLoss(loss.mean_loss);
    transport_->ReportBatch({batch_id, true, false, loss.mean_loss,
                             loss.correct, static_cast<int>(rows)});
    FinishBatch(batch_id);
    return;
  }

  CacheEntry entry;
  entry.step_at_forward = step_;
  entry.sent_at = std::chrono::steady_clock::now();
  entry.labels = message.labels;
  entry.probe = !train;
  if (mode_ == v1::TRAINING_MODE_BACKPROP || !train) {
    if (!train) entry.output = h;
    entry.trace = std::move(trace);
    CacheForGradient(batch_id, std::move(entry));
    transport_->SendForward({batch_id, step_, std::move(h),
                             std::move(message.labels), message.kind});
    return;
  }

  // DNI and cDNI: h goes downstream before this group's own update, so the
  // next group can start at once.
  entry.output = h;
  CacheForGradient(batch_id, std::move(entry));
  transport_->SendForward({batch_id, step_, h, message.labels, BatchKind::kTrain});
  const Matrix synthetic = synthetic_gradient_->Predict(h, message.labels);
  Update(batch_id, trace, synthetic);
}

void Group::HandleGradient(GradientMessage message) {
  const int64_t batch_id = message.batch_id;
  auto it = cache_.find(batch_id);
  if (it == cache_.end()) {
    // AcceptGradient saw the batch, but a later forward evicted it.
    LOG(WARNING) << "group " << index_ << ": dropped the gradient of batch "
                 << batch_id << " because its cache entry was evicted";
    absl::MutexLock lock(&mu_);
    ++stats_.gradients_dropped;
    return;
  }
  CacheEntry entry = std::move(it->second);
  cache_.erase(it);

  if (entry.probe) {
    RecordProbe(entry, message.gradient);
    FinishProbe(batch_id, entry.trace, message.gradient);
    FinishBatch(batch_id);
    return;
  }

  const int64_t staleness = step_ - entry.step_at_forward;
  const double seconds = std::chrono::duration<double>(
                             std::chrono::steady_clock::now() - entry.sent_at)
                             .count();
  {
    absl::MutexLock lock(&mu_);
    ++stats_.gradient_batches;
    ++stats_.staleness_count;
    stats_.staleness_steps_sum += staleness;
    stats_.staleness_steps_max = std::max(stats_.staleness_steps_max, staleness);
    stats_.staleness_seconds_sum += seconds;
    ++stats_.staleness_counts[std::min<int64_t>(staleness, kMaxCountedStaleness)];
  }
  observer_->OnGradient(staleness, seconds);

  if (mode_ == v1::TRAINING_MODE_BACKPROP) {
    Update(batch_id, entry.trace, message.gradient);
    if (index_ == 0) ReportBackwardDone(batch_id, message.gradient.rows());
  } else {
    SyntheticGradientModel::TrainResult result = synthetic_gradient_->Train(
        entry.output, entry.labels, message.gradient);
    observer_->OnSyntheticGradientTrained(result.loss, result.cosine);
    absl::MutexLock lock(&mu_);
    UpdateAverage(result.loss, &stats_.synthetic_gradient_loss);
    UpdateAverage(result.cosine, &stats_.synthetic_gradient_cosine);
  }
  FinishBatch(batch_id);
}

void Group::FinishProbe(int64_t batch_id, const Network::Trace& trace,
                        const Matrix& g) {
  if (index_ == 0) {
    ReportBackwardDone(batch_id, g.rows());
    return;
  }
  Matrix dx = network_.Backward(trace, g, /*want_input_gradient=*/true);
  // Backward accumulated parameter gradients; they are not applied, and the
  // next Update zeroes them first.
  transport_->SendGradient({batch_id, std::move(dx)});
}

void Group::RecordProbe(const CacheEntry& entry, const Matrix& exact) {
  if (!synthetic_gradient_) return;
  const Matrix synthetic = synthetic_gradient_->Predict(entry.output, entry.labels);
  const double cosine = Cosine(synthetic, exact);
  const double exact_norm = exact.norm();
  const double relative_error =
      exact_norm > 0.0 ? (synthetic - exact).norm() / exact_norm
                       : std::numeric_limits<double>::quiet_NaN();
  observer_->OnExactGradientProbe(cosine, relative_error);
  absl::MutexLock lock(&mu_);
  ++stats_.probes;
  stats_.probe_cosine = cosine;
  stats_.probe_relative_error = relative_error;
}

void Group::ReportBackwardDone(int64_t batch_id, int64_t rows) {
  BatchReport done;
  done.batch_id = batch_id;
  done.backward_done = true;
  done.examples = static_cast<int>(rows);
  transport_->ReportBatch(done);
}

void Group::Update(int64_t batch_id, const Network::Trace& trace,
                   const Matrix& g) {
  const bool send_upstream = index_ > 0;
  network_.ZeroGradients();
  Matrix dx = network_.Backward(trace, g, send_upstream);
  optimizer_->Step(network_.parameters(), network_.gradients(),
                   1.0f / static_cast<float>(g.rows()));
  ++step_;
  {
    absl::MutexLock lock(&mu_);
    stats_.step = step_;
  }
  observer_->OnUpdate(step_);
  if (send_upstream) transport_->SendGradient({batch_id, std::move(dx)});
}

void Group::CacheForGradient(int64_t batch_id, CacheEntry entry) {
  const int64_t rows = entry.labels.size();
  if (static_cast<int>(cache_.size()) >= cache_capacity_) {
    const int64_t oldest = cache_.begin()->first;
    cache_.erase(cache_.begin());
    LOG(WARNING) << "group " << index_ << ": evicted batch " << oldest
                 << " from a full activation cache of " << cache_capacity_
                 << " entries";
    absl::MutexLock lock(&mu_);
    awaiting_gradient_.erase(oldest);
    in_flight_.erase(oldest);
    ++stats_.cache_evictions;
    observer_->OnCacheEviction();
  }
  cache_.emplace(batch_id, std::move(entry));
  absl::MutexLock lock(&mu_);
  awaiting_gradient_[batch_id] = rows;
}

void Group::FinishBatch(int64_t batch_id) {
  absl::MutexLock lock(&mu_);
  in_flight_.erase(batch_id);
}

void Group::CountRejected(absl::StatusCode code) {
  absl::MutexLock lock(&mu_);
  ++stats_.rejected_requests;
  observer_->OnRejected(code);
}

int64_t GroupStats::StalenessQuantile(double fraction) const {
  if (staleness_count == 0) return 0;
  int64_t seen = 0;
  for (int s = 0; s <= kMaxCountedStaleness; ++s) {
    seen += staleness_counts[s];
    if (static_cast<double>(seen) >= fraction * staleness_count) return s;
  }
  return kMaxCountedStaleness;
}

GroupStats Group::stats() const {
  absl::MutexLock lock(&mu_);
  return stats_;
}

std::vector<Matrix> Group::synthetic_gradient_parameters() const {
  if (!synthetic_gradient_) return {};
  return synthetic_gradient_->network().parameters();
}

void Group::SaveCheckpoint(v1::GroupCheckpoint* checkpoint) const {
  checkpoint->set_group_index(index_);
  checkpoint->set_step(step_);
  checkpoint->clear_parameters();
  for (const Matrix& p : network_.parameters()) {
    MatrixToProto(p, checkpoint->add_parameters());
  }
  optimizer_->SaveState(checkpoint->mutable_optimizer());
  if (synthetic_gradient_) {
    synthetic_gradient_->SaveState(
        checkpoint->mutable_synthetic_gradient_parameters(),
        checkpoint->mutable_synthetic_gradient_optimizer());
  }
}

absl::Status Group::RestoreCheckpoint(const v1::GroupCheckpoint& checkpoint) {
  if (checkpoint.group_index() != index_) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint is of group ", checkpoint.group_index(),
                     ", not of group ", index_));
  }
  if (checkpoint.step() < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the checkpoint has step ", checkpoint.step()));
  }

  absl::StatusOr<std::vector<Matrix>> parameters = ParametersFromProto(
      checkpoint.parameters(), network_.parameters(), "parameter");
  if (!parameters.ok()) return parameters.status();

  absl::Status status =
      optimizer_->RestoreState(checkpoint.optimizer(), network_.parameters());
  if (!status.ok()) return status;
  if (synthetic_gradient_) {
    status = synthetic_gradient_->RestoreState(
        checkpoint.synthetic_gradient_parameters(),
        checkpoint.synthetic_gradient_optimizer());
    if (!status.ok()) return status;
  } else if (!checkpoint.synthetic_gradient_parameters().empty()) {
    return absl::InvalidArgumentError(
        "the checkpoint has a synthetic-gradient model but this group has "
        "none");
  }

  network_.parameters() = *std::move(parameters);
  step_ = checkpoint.step();
  absl::MutexLock lock(&mu_);
  stats_.step = step_;
  return absl::OkStatus();
}

}  // namespace synthgrad
