// Runs every group of a job in the calling thread, connected by an in-process
// transport. Events are processed in FIFO order until a batch has fully
// passed, so a run is deterministic: the reference that tests compare the
// services against, and the no-network baseline.
//
// Not thread-safe.
#ifndef SYNTHGRAD_COMMON_IN_PROCESS_TRAINER_H_
#define SYNTHGRAD_COMMON_IN_PROCESS_TRAINER_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "common/group.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

class InProcessTrainer {
 public:
  // Applies the spec's defaults, validates it and builds every group.
  static absl::StatusOr<std::unique_ptr<InProcessTrainer>> Create(
      v1::JobSpec spec);

  // Sends one batch through all groups, processes every event it causes
  // (updates, gradients, synthetic-gradient training) and returns the last
  // group's report. Fails with the group's error for an invalid batch.
  absl::StatusOr<BatchReport> Train(int64_t batch_id, Matrix x,
                                    std::vector<int32_t> labels);
  absl::StatusOr<BatchReport> Evaluate(int64_t batch_id, Matrix x,
                                       std::vector<int32_t> labels);
  // Runs an exact-gradient probe: no parameter changes, and each group with a
  // synthetic-gradient model records how close M(h) is to the exact gradient.
  absl::Status Probe(int64_t batch_id, Matrix x, std::vector<int32_t> labels);

  int group_count() const { return static_cast<int>(groups_.size()); }
  Group& group(int index) { return *groups_[index]; }
  const v1::JobSpec& spec() const { return spec_; }

 private:
  // A message in flight to group `target`.
  struct Event {
    int target;
    std::variant<ForwardMessage, GradientMessage> message;
  };

  class LoopbackTransport final : public Transport {
   public:
    LoopbackTransport(InProcessTrainer* trainer, int index)
        : trainer_(trainer), index_(index) {}
    void SendForward(ForwardMessage message) override;
    void SendGradient(GradientMessage message) override;
    void ReportBatch(const BatchReport& report) override;

   private:
    InProcessTrainer* trainer_;
    int index_;
  };

  explicit InProcessTrainer(v1::JobSpec spec) : spec_(std::move(spec)) {}

  // Processes events until none is left. Fails with the first group error.
  absl::Status Drain(ForwardMessage first);
  absl::StatusOr<BatchReport> Run(ForwardMessage first);

  v1::JobSpec spec_;
  std::vector<std::unique_ptr<LoopbackTransport>> transports_;
  std::vector<std::unique_ptr<Group>> groups_;
  std::deque<Event> events_;
  std::optional<BatchReport> report_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_IN_PROCESS_TRAINER_H_
