#include "services/rpc_sender.h"

#include <algorithm>
#include <random>

#include "absl/time/time.h"
#include "glog/logging.h"

namespace synthgrad {

RpcSender::RpcSender(std::string peer, int capacity, RetryPolicy policy,
                     FailureCallback on_failure,
                     std::chrono::microseconds added_latency)
    : peer_(std::move(peer)),
      capacity_(capacity),
      policy_(policy),
      on_failure_(std::move(on_failure)),
      added_latency_(added_latency) {
  thread_ = std::thread([this] { Run(); });
}

RpcSender::~RpcSender() {
  Shutdown();
  thread_.join();
}

void RpcSender::Shutdown() {
  absl::MutexLock lock(&mu_);
  stopping_ = true;
  queue_.clear();
}

void RpcSender::Enqueue(std::string description, Call call) {
  absl::MutexLock lock(&mu_);
  mu_.Await(absl::Condition(
      +[](RpcSender* sender) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sender->mu_) {
        return sender->stopping_ ||
               static_cast<int>(sender->queue_.size()) < sender->capacity_;
      },
      this));
  if (stopping_) return;
  queue_.push_back({std::move(description), std::move(call),
                    std::chrono::steady_clock::now() + added_latency_});
}

void RpcSender::Run() {
  for (;;) {
    Pending pending;
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](RpcSender* sender) ABSL_EXCLUSIVE_LOCKS_REQUIRED(sender->mu_) {
            return sender->stopping_ || !sender->queue_.empty();
          },
          this));
      if (stopping_) return;
      pending = std::move(queue_.front());
      queue_.pop_front();
      delivering_ = true;
    }
    // Calls were queued in order with the same latency, so waiting for each
    // one's due time delays every call by that latency and no more. Shutdown
    // ends the wait, and the call is then dropped.
    {
      absl::MutexLock lock(&mu_);
      mu_.AwaitWithDeadline(
          absl::Condition(&stopping_),
          absl::FromChrono(std::chrono::system_clock::now() +
                           (pending.due - std::chrono::steady_clock::now())));
      if (stopping_) return;
    }
    Deliver(pending);
    absl::MutexLock lock(&mu_);
    delivering_ = false;
  }
}

bool RpcSender::WaitUntilIdle(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return stopping_ || (queue_.empty() && !delivering_);
  };
  mu_.AwaitWithTimeout(absl::Condition(&idle), timeout);
  return !stopping_ && queue_.empty() && !delivering_;
}

void RpcSender::Deliver(const Pending& pending) {
  const grpc::Status status = CallWithRetry(
      pending.description, peer_, policy_, pending.call, [this] {
        absl::MutexLock lock(&mu_);
        return stopping_;
      });
  if (status.ok() || status.error_code() == grpc::StatusCode::CANCELLED) return;
  LOG(ERROR) << pending.description << " to " << peer_ << " failed: code "
             << status.error_code() << ": " << status.error_message();
  if (on_failure_) on_failure_(pending.description, status);
}

grpc::Status CallWithRetry(const std::string& description, const std::string& peer,
                           const RetryPolicy& policy, const RpcCall& call,
                           const std::function<bool()>& cancelled) {
  const auto give_up_at = std::chrono::steady_clock::now() + policy.total_timeout;
  std::mt19937 jitter_rng(std::random_device{}());
  auto backoff = policy.initial_backoff;
  for (int attempt = 1;; ++attempt) {
    if (cancelled && cancelled()) {
      return grpc::Status(grpc::StatusCode::CANCELLED,
                          description + " cancelled");
    }
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         policy.attempt_timeout);
    const grpc::Status status = call(&context);
    const bool retryable =
        status.error_code() == grpc::StatusCode::UNAVAILABLE ||
        status.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED;
    if (!retryable ||
        std::chrono::steady_clock::now() + backoff > give_up_at) {
      return status;
    }
    if (attempt == 1 || attempt % 20 == 0) {
      LOG(WARNING) << description << " to " << peer << " attempt " << attempt
                   << " failed (code " << status.error_code() << ": "
                   << status.error_message() << "); retrying";
    }
    // A uniform sleep in [backoff / 2, backoff] spreads out peers that failed
    // together.
    std::uniform_int_distribution<int64_t> jitter(backoff.count() / 2,
                                                  backoff.count());
    std::this_thread::sleep_for(std::chrono::milliseconds(jitter(jitter_rng)));
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
}

}  // namespace synthgrad
