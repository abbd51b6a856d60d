#include "common/in_process_trainer.h"

#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/job_spec.h"

namespace synthgrad {

absl::StatusOr<std::unique_ptr<InProcessTrainer>> InProcessTrainer::Create(
    v1::JobSpec spec) {
  ApplyJobDefaults(&spec);
  absl::Status status = ValidateJobSpec(spec);
  if (!status.ok()) return status;

  std::unique_ptr<InProcessTrainer> trainer(
      new InProcessTrainer(std::move(spec)));
  for (int i = 0; i < trainer->spec_.groups_size(); ++i) {
    trainer->transports_.push_back(
        std::make_unique<LoopbackTransport>(trainer.get(), i));
    absl::StatusOr<std::unique_ptr<Group>> group =
        Group::Create(trainer->spec_, i, trainer->transports_.back().get());
    if (!group.ok()) return group.status();
    trainer->groups_.push_back(*std::move(group));
  }
  return trainer;
}

absl::StatusOr<BatchReport> InProcessTrainer::Train(
    int64_t batch_id, Matrix x, std::vector<int32_t> labels) {
  return Run({batch_id, 0, std::move(x), std::move(labels), BatchKind::kTrain});
}

absl::StatusOr<BatchReport> InProcessTrainer::Evaluate(
    int64_t batch_id, Matrix x, std::vector<int32_t> labels) {
  return Run({batch_id, 0, std::move(x), std::move(labels), BatchKind::kEval});
}

absl::Status InProcessTrainer::Probe(int64_t batch_id, Matrix x,
                                     std::vector<int32_t> labels) {
  return Drain({batch_id, 0, std::move(x), std::move(labels), BatchKind::kProbe});
}

absl::StatusOr<BatchReport> InProcessTrainer::Run(ForwardMessage first) {
  report_.reset();
  absl::Status status = Drain(std::move(first));
  if (!status.ok()) return status;
  if (!report_) {
    return absl::InternalError("the last group did not report the batch");
  }
  return *report_;
}

absl::Status InProcessTrainer::Drain(ForwardMessage first) {
  events_.push_back({0, std::move(first)});
  while (!events_.empty()) {
    Event event = std::move(events_.front());
    events_.pop_front();
    Group& target = *groups_[event.target];
    absl::Status status;
    if (auto* forward = std::get_if<ForwardMessage>(&event.message)) {
      status = target.AcceptForward(*forward);
      if (status.ok()) target.HandleForward(std::move(*forward));
    } else {
      auto& gradient = std::get<GradientMessage>(event.message);
      status = target.AcceptGradient(gradient);
      if (status.ok()) target.HandleGradient(std::move(gradient));
    }
    if (!status.ok()) {
      events_.clear();
      return status;
    }
  }
  return absl::OkStatus();
}

void InProcessTrainer::LoopbackTransport::SendForward(ForwardMessage message) {
  trainer_->events_.push_back({index_ + 1, std::move(message)});
}

void InProcessTrainer::LoopbackTransport::SendGradient(
    GradientMessage message) {
  trainer_->events_.push_back({index_ - 1, std::move(message)});
}

void InProcessTrainer::LoopbackTransport::ReportBatch(
    const BatchReport& report) {
  if (!report.backward_done) trainer_->report_ = report;
}

}  // namespace synthgrad
