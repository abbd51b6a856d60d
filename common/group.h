// One layer group: a slice of the network, its optimizer, its
// synthetic-gradient model and the update rules of locked backprop, DNI and
// cDNI. The same class runs inside synthgrad_layer and inside the in-process
// trainer; only the Transport differs.
//
// Update rules for group k receiving a training batch b with input x:
//   1. h = f_k(x).
//   2. Last group: g = dL/dh from softmax cross-entropy and the labels.
//      DNI / cDNI: send h to group k+1 at once, then g = M_k(h) or M_k(h, y).
//      Backprop: send h to group k+1, cache the forward trace and wait.
//   3. Backpropagate g through f_k, take an optimizer step and send dL/dx
//      for b to group k-1 (the bootstrapped target of M_{k-1}).
//   4. Gradient(b, d) from group k+1: DNI / cDNI train M_k on (h_b, d);
//      backprop runs step 3 with g = d.
// A probe batch runs steps 1-3 as in backprop but updates nothing; each group
// with a synthetic-gradient model compares M_k(h) with the exact d.
//
// Threading: AcceptForward, AcceptGradient and stats() are thread-safe. Every
// other method runs on one compute thread, which owns the parameters.
#ifndef SYNTHGRAD_COMMON_GROUP_H_
#define SYNTHGRAD_COMMON_GROUP_H_

#include <array>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/network.h"
#include "common/optimizer.h"
#include "common/synthetic_gradient.h"
#include "common/tensor.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

enum class BatchKind {
  kTrain,
  kEval,
  // Exact-gradient probe: locked forward and backward pass, no update.
  kProbe,
};

struct ForwardMessage {
  int64_t batch_id = 0;
  // Updates the sender had made when it sent the batch.
  int64_t producer_step = 0;
  Matrix activations;
  // One class index per row.
  std::vector<int32_t> labels;
  BatchKind kind = BatchKind::kTrain;
};

struct GradientMessage {
  int64_t batch_id = 0;
  // d loss / d output of the receiving group, one row per example.
  Matrix gradient;
};

// Result of a batch, sent by the last group to the coordinator. In locked
// backprop the first group also sends one, with backward_done set, once it
// has applied the batch's gradient.
struct BatchReport {
  int64_t batch_id = 0;
  bool train = true;
  bool backward_done = false;
  double mean_loss = 0.0;
  int correct = 0;
  int examples = 0;
};

// Connection of a group to its neighbours and the coordinator. Only the
// group's compute thread calls it, so implementations must not call back
// into the group synchronously.
class Transport {
 public:
  virtual ~Transport() = default;
  // Sends a batch's output to the next group.
  virtual void SendForward(ForwardMessage message) = 0;
  // Sends d loss / d input of a batch to the previous group.
  virtual void SendGradient(GradientMessage message) = 0;
  // Sends a batch result (last group) or the end of a batch's backward pass
  // (first group, locked backprop) to the coordinator.
  virtual void ReportBatch(const BatchReport& report) = 0;
};

// Receives a group's events as they happen, for metrics. Called from the
// compute thread and from request threads, so implementations must be
// thread-safe. Every method defaults to doing nothing.
class GroupObserver {
 public:
  virtual ~GroupObserver() = default;
  virtual void OnForward(bool train, int64_t samples) {}
  // A weight update; `step` counts updates so far.
  virtual void OnUpdate(int64_t step) {}
  // A true gradient arrived for a batch sent forward `staleness_steps`
  // updates and `staleness_seconds` ago.
  virtual void OnGradient(int64_t staleness_steps, double staleness_seconds) {}
  // The synthetic-gradient model was trained towards its target.
  virtual void OnSyntheticGradientTrained(double loss, double cosine) {}
  // The synthetic gradient was compared with the exact gradient.
  virtual void OnExactGradientProbe(double cosine, double relative_error) {}
  virtual void OnTrainingLoss(double loss) {}
  virtual void OnCacheEviction() {}
  virtual void OnRejected(absl::StatusCode code) {}
  virtual void OnQueueDepth(int depth) {}
};

// Staleness values above this count as this in GroupStats::staleness_counts.
inline constexpr int kMaxCountedStaleness = 64;

struct GroupStats {
  // Returns the smallest staleness s such that at least `fraction` of the
  // recorded gradients had staleness <= s; 0 before any gradient.
  int64_t StalenessQuantile(double fraction) const;

  int64_t step = 0;
  int64_t forward_batches = 0;
  int64_t forward_samples = 0;
  int64_t gradient_batches = 0;
  int64_t cache_evictions = 0;
  // Gradients whose batch had already been evicted.
  int64_t gradients_dropped = 0;
  int64_t staleness_count = 0;
  int64_t staleness_steps_sum = 0;
  int64_t staleness_steps_max = 0;
  double staleness_seconds_sum = 0.0;
  // staleness_counts[s]: gradients that arrived s steps late, s capped at
  // kMaxCountedStaleness.
  std::array<int64_t, kMaxCountedStaleness + 1> staleness_counts{};
  // Exponential moving averages with factor 0.05; NaN before the first value.
  double synthetic_gradient_loss = 0.0;
  double synthetic_gradient_cosine = 0.0;
  double training_loss = 0.0;
  int64_t rejected_requests = 0;
  int64_t probes = 0;
  // Of the latest exact-gradient probe; NaN before the first.
  double probe_cosine = 0.0;
  double probe_relative_error = 0.0;
};

class Group {
 public:
  // Builds group `index` of a spec that passed ValidateJobSpec. Parameters
  // are initialised from spec.seed() and the index, so every run of the same
  // spec starts from the same weights. `transport` and `observer` (which may
  // be null) must outlive the group.
  static absl::StatusOr<std::unique_ptr<Group>> Create(
      const v1::JobSpec& spec, int index, Transport* transport,
      GroupObserver* observer = nullptr);

  int index() const { return index_; }
  bool is_last() const { return index_ == group_count_ - 1; }
  int input_dim() const { return network_.input_dim(); }
  int output_dim() const { return network_.output_dim(); }
  int64_t parameter_count() const { return network_.parameter_count(); }
  // Largest batch accepted: the spec's batch_size, which the limits of
  // ValidateJobSpec were checked against.
  int max_batch_rows() const { return max_batch_rows_; }
  v1::TrainingMode mode() const { return mode_; }

  // Checks a batch before it is queued: rows in [1, max_batch_rows()], columns
  // equal to input_dim(), finite values, one label in [0, num_classes) per
  // row (INVALID_ARGUMENT), and a batch id not already in flight here
  // (ALREADY_EXISTS). On success the id counts as in flight until the group
  // is done with it.
  absl::Status AcceptForward(const ForwardMessage& message)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Checks a gradient before it is queued: the batch must await a gradient
  // here (NOT_FOUND otherwise) and the gradient must be finite with the
  // shape of the batch's output (INVALID_ARGUMENT). On success the batch no
  // longer awaits a gradient, so a duplicate gets NOT_FOUND.
  absl::Status AcceptGradient(const GradientMessage& message)
      ABSL_LOCKS_EXCLUDED(mu_);

  // Run the update rules on the compute thread, for messages accepted above.
  void HandleForward(ForwardMessage message);
  void HandleGradient(GradientMessage message);

  // Counts a request rejected before it reached this group.
  void CountRejected(absl::StatusCode code) ABSL_LOCKS_EXCLUDED(mu_);

  GroupObserver& observer() const { return *observer_; }

  GroupStats stats() const ABSL_LOCKS_EXCLUDED(mu_);

  // Compute thread only.
  const std::vector<Matrix>& parameters() const { return network_.parameters(); }
  std::vector<Matrix> synthetic_gradient_parameters() const;
  // Compute thread only. Copies the step, the parameters and optimizer state
  // of the network and of the synthetic-gradient model into `checkpoint`.
  // Batches waiting in the cache are not saved.
  void SaveCheckpoint(v1::GroupCheckpoint* checkpoint) const;
  // Compute thread only, before any message. Loads SaveCheckpoint's output.
  // Fails with INVALID_ARGUMENT when the checkpoint is of another group or a
  // count or shape differs. The group may then be partly restored, so the
  // caller must discard it.
  absl::Status RestoreCheckpoint(const v1::GroupCheckpoint& checkpoint);

 private:
  // State kept for a training batch until its gradient arrives.
  struct CacheEntry {
    Matrix output;             // h, for training M (DNI, cDNI).
    Network::Trace trace;      // Layer inputs, for Backward (backprop).
    std::vector<int32_t> labels;
    bool probe = false;
    int64_t step_at_forward = 0;
    std::chrono::steady_clock::time_point sent_at;
  };

  Group(const v1::JobSpec& spec, int index, Network network,
        std::unique_ptr<Optimizer> optimizer,
        std::optional<SyntheticGradientModel> synthetic_gradient,
        Transport* transport, GroupObserver* observer);

  // Backpropagates g through the traced forward pass, steps the optimizer
  // and sends dL/dx upstream unless this is the first group.
  void Update(int64_t batch_id, const Network::Trace& trace, const Matrix& g);

  // Backpropagates the exact gradient g of a probe without any update, and
  // sends dL/dx upstream. The first group reports the finished probe to the
  // coordinator instead.
  void FinishProbe(int64_t batch_id, const Network::Trace& trace,
                   const Matrix& g);

  // Compares the synthetic gradient for a probe's output with the exact
  // gradient `exact`.
  void RecordProbe(const CacheEntry& entry, const Matrix& exact);

  // Tells the coordinator that the first group has finished a batch's
  // backward pass (locked backprop and probes).
  void ReportBackwardDone(int64_t batch_id, int64_t rows);

  // Caches a batch that now awaits its gradient, evicting the oldest entry
  // when the cache is full.
  void CacheForGradient(int64_t batch_id, CacheEntry entry);

  void FinishBatch(int64_t batch_id) ABSL_LOCKS_EXCLUDED(mu_);

  const int index_;
  const int group_count_;
  const v1::TrainingMode mode_;
  const int num_classes_;
  const int cache_capacity_;
  const int max_batch_rows_;
  Transport* const transport_;
  GroupObserver* const observer_;

  // Compute-thread state.
  Network network_;
  std::unique_ptr<Optimizer> optimizer_;
  std::optional<SyntheticGradientModel> synthetic_gradient_;
  // Batch ids grow over a job, so the first entry is the oldest.
  std::map<int64_t, CacheEntry> cache_;
  int64_t step_ = 0;

  mutable absl::Mutex mu_;
  // Batches accepted and not yet finished.
  absl::flat_hash_set<int64_t> in_flight_ ABSL_GUARDED_BY(mu_);
  // Batches awaiting a gradient, with their row count.
  absl::flat_hash_map<int64_t, int64_t> awaiting_gradient_ ABSL_GUARDED_BY(mu_);
  GroupStats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_GROUP_H_
