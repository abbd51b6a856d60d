// One training job of the coordinator, run on a thread of its own.
//
// The job configures every group. Then, for each epoch, it shuffles the
// training set from the seed, cuts it into shards of batches and sends each
// batch to the first group, with at most max_in_flight batches awaiting
// their result from the last group. After the epoch it evaluates the test
// set. Report, called for ReportBatch, closes a batch.
//
// Checkpoints and recovery: every checkpoint_interval_shards shards and at
// each epoch start, the job drains the batches in flight and requests a
// checkpoint from every group, last to first. Then it writes its own cursor.
// A monitor thread polls every group. When one is down, has restarted
// unconfigured or was configured by another client, or a batch times out,
// the job waits for every group to respond. It then configures all of them
// again from the latest complete checkpoint and feeds the batches after it
// again.
//
// Thread-safe.
#ifndef SYNTHGRAD_SERVICES_COORDINATOR_JOB_H_
#define SYNTHGRAD_SERVICES_COORDINATOR_JOB_H_

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/checkpoint.h"
#include "common/dataset.h"
#include "services/metrics.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

namespace synthgrad {

bool IsTerminal(v1::JobState state);

class Job {
 public:
  struct Options {
    std::string advertise_address;
    // Folder for the coordinator's part of each checkpoint. Without it
    // checkpoints are kept in memory only, which covers a group's crash but
    // not the coordinator's.
    std::optional<CheckpointDirectory> checkpoint_directory;
    // Continue from this checkpoint instead of starting afresh.
    std::optional<v1::CoordinatorCheckpoint> resume_from;
  };

  // `spec` has passed ValidateJobSpec. `metrics` must outlive the job.
  Job(std::string id, int job_number, v1::JobSpec spec, TrainTestData data,
      Options options, CoordinatorMetrics* metrics);
  // Stops the job, writing a final checkpoint when checkpoints are on, and
  // waits for its threads.
  ~Job();

  const std::string& id() const { return id_; }

  void Start();
  // Waits for the job thread to end. Call after Stop, or to wait for the
  // job to finish.
  void Wait();

  // Asks the job thread to stop; the state becomes STOPPED unless the job
  // has already ended. With `final_checkpoint`, a job in training first
  // drains its batches (for at most a few seconds) and writes a checkpoint.
  void Stop(const std::string& reason, bool final_checkpoint = false)
      ABSL_LOCKS_EXCLUDED(mu_);

  bool finished() const ABSL_LOCKS_EXCLUDED(mu_);

  v1::JobStatus Snapshot(int64_t* version) const ABSL_LOCKS_EXCLUDED(mu_);

  // Waits until the status changes past `version` or `timeout` passes.
  void WaitForChange(int64_t version, absl::Duration timeout) const
      ABSL_LOCKS_EXCLUDED(mu_);

  // Records the result of a batch in flight, or the first group's
  // backward_done notice for it. Fails with NOT_FOUND for a batch this job
  // is not waiting for, and with INVALID_ARGUMENT or FAILED_PRECONDITION for
  // a report that does not fit the batch.
  absl::Status Report(const v1::BatchResult& result) ABSL_LOCKS_EXCLUDED(mu_);

 private:
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

  void Run();
  // Trains from the cursor (epoch_, next_batch_) to the last epoch.
  absl::Status TrainFromCursor();
  absl::Status RunEpoch();

  // Sends Configure to every group, retrying while a group is still
  // starting. A positive `restore_checkpoint_id` makes the groups load that
  // checkpoint; requests for batch ids below `min_batch_id` are rejected.
  absl::Status ConfigureGroups(int64_t restore_checkpoint_id,
                               int64_t min_batch_id);

  // Sends the training batches of the epoch from next_batch_ on, with
  // checkpoints on the way.
  absl::Status SendTrainingPass();
  // Sends the whole test set and waits for every result.
  absl::Status SendTestPass();
  // Gathers batch [begin, end) of `order` from `data` into `request`.
  void FillBatch(const Dataset& data, const std::vector<int64_t>& order,
                 size_t begin, v1::ForwardRequest* request);

  // True when training batch `index` of an epoch is preceded by an
  // exact-gradient probe.
  bool ProbeDue(int64_t index) const;
  // True when a checkpoint is due before training batch `index` of an epoch.
  bool CheckpointDue(int64_t index) const;

  // Sends `request`, whose activations and labels are set, to the first
  // group as a new batch in `mode`.
  absl::Status SendBatch(v1::ForwardRequest* request, v1::BatchMode mode);

  // Drains the batches in flight, has every group write the next
  // checkpoint and writes the coordinator's cursor. Returns a recoverable
  // error when a group is down. A group without --checkpoint_dir fails the
  // job, and any other failure only skips this checkpoint.
  absl::Status WriteCheckpoint(absl::Duration call_timeout);
  // Writes the coordinator's file with `checkpoint`; false after logging
  // the error.
  bool WriteCoordinatorFile(const v1::CoordinatorCheckpoint& checkpoint);
  v1::CoordinatorCheckpoint CursorCheckpoint() const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sets the cursor, the epoch's training totals and the finished epochs
  // from `checkpoint`.
  void RestoreCursor(const v1::CoordinatorCheckpoint& checkpoint)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Waits for every group to respond, configures all of them from the latest
  // complete checkpoint and moves the cursor back to it. `cause` is the
  // failure that started the recovery.
  absl::Status Recover(const absl::Status& cause);
  // Waits until every group responds to GetStatus, for at most
  // recovery_timeout_seconds.
  absl::Status WaitForGroups();

  // Polls every group once a second while monitoring_ is set, and records
  // the first group found down or restarted in group_down_.
  void Monitor();
  struct GroupHealth {
    // Empty while the group is up and configured for this job.
    std::string problem;
    // The group responds without this job's configuration: its process
    // restarted or another client configured it.
    bool restarted = false;
  };
  GroupHealth CheckGroup(int index);

  // Reads every group's status; an unreachable group gets an entry with
  // only its index set.
  std::vector<v1::GroupStatus> GroupStatuses();

  // Waits until fewer than `limit` batches are in flight. Fails when a stop
  // is requested, a group is down, or no result arrives for
  // batch_timeout_seconds (or `timeout`, when given).
  absl::Status WaitForInFlightBelow(
      int limit, std::optional<absl::Duration> timeout = std::nullopt,
      bool ignore_stop = false) ABSL_LOCKS_EXCLUDED(mu_);

  // Checks a last-group result against the batch it reports on.
  static absl::Status CheckResult(const InFlight& batch,
                                  const v1::BatchResult& result);
  // Drops the batch once neither its result nor its backward pass is still
  // awaited, and records the progress.
  void ClosePartOfBatch(absl::flat_hash_map<int64_t, InFlight>::iterator it)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  void SetState(v1::JobState state) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void SetMessage(std::string message) ABSL_LOCKS_EXCLUDED(mu_);
  bool StopRequested() const ABSL_LOCKS_EXCLUDED(mu_);
  // True when a stop is requested or a group is down: a call in progress
  // should give up.
  bool ShouldAbandonCalls() const ABSL_LOCKS_EXCLUDED(mu_);
  void UpdateRate() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateShards() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string id_;
  const v1::JobSpec spec_;
  const TrainTestData data_;
  const Options options_;
  const uint64_t fingerprint_;
  const int64_t batches_per_epoch_;
  CoordinatorMetrics* const metrics_;
  const absl::Time started_at_;
  std::vector<std::unique_ptr<v1::LayerService::Stub>> stubs_;

  // Job thread only. Ids start at job_number * 2^40, so a late report from
  // an earlier job on the same coordinator never matches a batch of this one.
  int64_t next_batch_id_;
  // Latest checkpoint every process finished; id 0 is the initial state.
  v1::CoordinatorCheckpoint committed_;
  // Random id of this run of the job, kept by a resume; names the groups'
  // checkpoint folders and authorizes Checkpoint requests.
  uint64_t run_id_ = 0;
  // checkpoint_interval_shards > 0 and every group has a --checkpoint_dir,
  // as of the latest ConfigureGroups.
  bool checkpoints_enabled_ = false;
  // Highest (epoch - 1) * batches_per_epoch + batch index sent so far; a
  // training batch at or below it is fed again.
  int64_t highest_fed_index_ = -1;

  mutable absl::Mutex mu_;
  v1::JobStatus status_ ABSL_GUARDED_BY(mu_);
  // Bumped at every change of status_, for WatchJob.
  int64_t version_ ABSL_GUARDED_BY(mu_) = 0;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool final_checkpoint_requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string stop_reason_ ABSL_GUARDED_BY(mu_);
  // Cursor: the epoch in progress and the next training batch to send.
  int epoch_ ABSL_GUARDED_BY(mu_) = 1;
  int64_t next_batch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<int64_t, InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  PassTotals train_totals_ ABSL_GUARDED_BY(mu_);
  PassTotals test_totals_ ABSL_GUARDED_BY(mu_);
  int64_t batches_done_in_epoch_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time last_progress_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  std::deque<std::pair<absl::Time, int64_t>> rate_points_ ABSL_GUARDED_BY(mu_);
  // Set while the monitor should poll the groups.
  bool monitoring_ ABSL_GUARDED_BY(mu_) = false;
  bool monitor_exit_ ABSL_GUARDED_BY(mu_) = false;
  // Why a group is considered down; empty while all are up.
  std::string group_down_ ABSL_GUARDED_BY(mu_);
  // configuration_id each group returned from its latest Configure.
  std::vector<uint64_t> configuration_ids_ ABSL_GUARDED_BY(mu_);
  // The Checkpoint call in progress, cancelled by Stop and when a group
  // goes down; null between calls.
  grpc::ClientContext* checkpoint_call_ ABSL_GUARDED_BY(mu_) = nullptr;

  std::thread thread_;
  std::thread monitor_thread_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_COORDINATOR_JOB_H_
