#include "common/group_worker.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"

namespace synthgrad {

GroupWorker::GroupWorker(std::unique_ptr<Group> group, int queue_capacity)
    : group_(std::move(group)), queue_capacity_(queue_capacity) {
  thread_ = std::thread([this] { Run(); });
}

GroupWorker::~GroupWorker() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  thread_.join();
}

absl::Status GroupWorker::CheckCapacity() const {
  if (static_cast<int>(queue_.size()) >= queue_capacity_) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "group ", group_->index(), " queue is full (", queue_capacity_,
        " events); retry later"));
  }
  return absl::OkStatus();
}

absl::Status GroupWorker::SubmitForward(ForwardMessage message) {
  absl::MutexLock lock(&mu_);
  absl::Status status = CheckCapacity();
  if (!status.ok()) {
    group_->CountRejected(status.code());
    return status;
  }
  status = group_->AcceptForward(message);
  if (!status.ok()) return status;
  queue_.push_back(std::move(message));
  group_->observer().OnQueueDepth(static_cast<int>(queue_.size()));
  return absl::OkStatus();
}

absl::Status GroupWorker::SubmitGradient(GradientMessage message) {
  absl::MutexLock lock(&mu_);
  absl::Status status = CheckCapacity();
  if (!status.ok()) {
    group_->CountRejected(status.code());
    return status;
  }
  status = group_->AcceptGradient(message);
  if (!status.ok()) return status;
  queue_.push_back(std::move(message));
  group_->observer().OnQueueDepth(static_cast<int>(queue_.size()));
  return absl::OkStatus();
}

void GroupWorker::RunOnComputeThread(std::function<void(Group&)> task) {
  absl::Notification done;
  {
    absl::MutexLock lock(&mu_);
    queue_.push_back(Task([&task, &done](Group& group) {
      task(group);
      done.Notify();
    }));
  }
  done.WaitForNotification();
}

int GroupWorker::queue_depth() const {
  absl::MutexLock lock(&mu_);
  return static_cast<int>(queue_.size());
}

void GroupWorker::Run() {
  for (;;) {
    Event event;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](GroupWorker* worker) ABSL_EXCLUSIVE_LOCKS_REQUIRED(worker->mu_) {
            return worker->stopping_ || !worker->queue_.empty();
          },
          this));
      if (stopping_) return;
      event = std::move(queue_.front());
      queue_.pop_front();
      group_->observer().OnQueueDepth(static_cast<int>(queue_.size()));
    }
    if (auto* forward = std::get_if<ForwardMessage>(&event)) {
      group_->HandleForward(std::move(*forward));
    } else if (auto* gradient = std::get_if<GradientMessage>(&event)) {
      group_->HandleGradient(std::move(*gradient));
    } else {
      std::get<Task>(event)(*group_);
    }
  }
}

}  // namespace synthgrad
