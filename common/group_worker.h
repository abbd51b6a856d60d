// The compute thread of a layer group: a bounded queue of accepted forward and
// gradient messages, drained in arrival order by one thread that owns the
// Group. RPC handlers call the Submit methods and return at once.
//
// All public methods are thread-safe.
#ifndef SYNTHGRAD_COMMON_GROUP_WORKER_H_
#define SYNTHGRAD_COMMON_GROUP_WORKER_H_

#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <variant>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "common/group.h"

namespace synthgrad {

class GroupWorker {
 public:
  // Starts the compute thread. `queue_capacity` bounds the messages waiting
  // for it.
  GroupWorker(std::unique_ptr<Group> group, int queue_capacity);
  // Stops the thread after the event it is running; queued events are
  // dropped.
  ~GroupWorker();

  GroupWorker(const GroupWorker&) = delete;
  GroupWorker& operator=(const GroupWorker&) = delete;

  // Validate through Group::Accept* and queue the message. Fail with
  // RESOURCE_EXHAUSTED when the queue is full, or with the Accept* error.
  absl::Status SubmitForward(ForwardMessage message) ABSL_LOCKS_EXCLUDED(mu_);
  absl::Status SubmitGradient(GradientMessage message) ABSL_LOCKS_EXCLUDED(mu_);

  // Runs `task` on the compute thread after every event queued before it and
  // waits for it to finish.
  void RunOnComputeThread(std::function<void(Group&)> task)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Counts a request rejected before it reached Submit*.
  void CountRejected(absl::StatusCode code) { group_->CountRejected(code); }

  int queue_depth() const ABSL_LOCKS_EXCLUDED(mu_);
  // For the thread-safe members of Group only.
  const Group& group() const { return *group_; }

 private:
  using Task = std::function<void(Group&)>;
  using Event = std::variant<ForwardMessage, GradientMessage, Task>;

  absl::Status CheckCapacity() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Run();

  const std::unique_ptr<Group> group_;
  const int queue_capacity_;

  mutable absl::Mutex mu_;
  std::deque<Event> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_GROUP_WORKER_H_
