// Delivers RPCs to one peer in the order they were queued, from a thread of
// its own, so the caller (a group's compute thread) does not wait for the
// network unless `capacity` calls are already queued. A call failing with
// UNAVAILABLE or RESOURCE_EXHAUSTED is retried with exponential backoff and
// jitter. Any other failure, or running out of retry time, is logged and
// passed to the failure callback.
//
// Thread-safe.
#ifndef SYNTHGRAD_SERVICES_RPC_SENDER_H_
#define SYNTHGRAD_SERVICES_RPC_SENDER_H_

#include <chrono>
#include <functional>
#include <deque>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"

namespace synthgrad {

struct RetryPolicy {
  // Deadline of one attempt.
  std::chrono::milliseconds attempt_timeout{10000};
  // Total time across attempts before the call is given up.
  std::chrono::milliseconds total_timeout{60000};
  std::chrono::milliseconds initial_backoff{10};
  std::chrono::milliseconds max_backoff{1000};
};

// Signature of one attempt of a call; `context` carries the deadline.
using RpcCall = std::function<grpc::Status(grpc::ClientContext* context)>;

// Runs `call` until it succeeds, fails with a code other than UNAVAILABLE or
// RESOURCE_EXHAUSTED, runs out of `policy`'s total time, or `cancelled`
// returns true. Returns the last attempt's status. `description` and `peer` name the
// call in the warning logged for retries.
grpc::Status CallWithRetry(const std::string& description, const std::string& peer,
                           const RetryPolicy& policy, const RpcCall& call,
                           const std::function<bool()>& cancelled);

class RpcSender {
 public:
  using Call = RpcCall;
  using FailureCallback =
      std::function<void(const std::string& description, const grpc::Status& status)>;

  // `peer` names the destination in logs. At most `capacity` calls wait;
  // Enqueue blocks beyond that. Each call starts no earlier than
  // `added_latency` after it was queued, which emulates a slower link for
  // experiments without limiting how many calls are on their way.
  RpcSender(std::string peer, int capacity, RetryPolicy policy,
            FailureCallback on_failure,
            std::chrono::microseconds added_latency = std::chrono::microseconds(0));
  // Stops after the call in progress; queued calls are dropped.
  ~RpcSender();

  // Drops queued calls, makes Enqueue return at once from now on, and stops
  // retrying. Call it before stopping a thread that may block in Enqueue.
  void Shutdown() ABSL_LOCKS_EXCLUDED(mu_);

  RpcSender(const RpcSender&) = delete;
  RpcSender& operator=(const RpcSender&) = delete;

  // Queues `call`. `description` names it in logs ("Forward batch 12").
  void Enqueue(std::string description, Call call) ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until every queued call has been delivered or given up. Returns
  // false when `timeout` passes first or the sender is shut down.
  bool WaitUntilIdle(absl::Duration timeout) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  struct Pending {
    std::string description;
    Call call;
    // Earliest start, queue time plus added_latency_.
    std::chrono::steady_clock::time_point due;
  };

  void Run();
  void Deliver(const Pending& pending);

  const std::string peer_;
  const int capacity_;
  const RetryPolicy policy_;
  const FailureCallback on_failure_;
  const std::chrono::microseconds added_latency_;

  absl::Mutex mu_;
  std::deque<Pending> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  // A call taken from queue_ is being delivered.
  bool delivering_ ABSL_GUARDED_BY(mu_) = false;

  std::thread thread_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_RPC_SENDER_H_
