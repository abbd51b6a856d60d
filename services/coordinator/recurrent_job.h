// Drives a recurrent job through its RecurrentGroupService groups: Copy or
// Repeat Copy sequences with the length curriculum, cut into chunks of T
// steps. Per chunk the bottom group gets the inputs; with two groups its
// hidden sequence goes to the top group, which computes the loss, and the top
// group's input gradients go back to the bottom group's Gradient.
//
// NOTE: chunks are sent one at a time and every call waits for its reply,
// so the groups never compute at the same time. With dni_between_groups the
// bottom group still updates before its true gradient arrives.
//
// Not thread-safe; one thread runs a job.
#ifndef SYNTHGRAD_SERVICES_COORDINATOR_RECURRENT_JOB_H_
#define SYNTHGRAD_SERVICES_COORDINATOR_RECURRENT_JOB_H_

#include <memory>
#include <random>
#include <vector>

#include "absl/status/statusor.h"
#include "common/sequence_tasks.h"
#include "synthgrad/v1/recurrent.grpc.pb.h"

namespace synthgrad {

struct RecurrentCopyOptions {
  bool repeat = false;
  int batch = 16;
  int bits = 8;
  int max_repeats = 2;
  // Sequences (batches) to train.
  int batches = 100;
  double threshold = 0.15;
  int window = 20;
  uint64_t seed = 1;
};

struct RecurrentJobSummary {
  // Per batch: loss in nats per scored output bit, and errors (wrong bits)
  // per sequence.
  std::vector<double> loss_per_bit;
  std::vector<double> errors_per_sequence;
  int solved_length = 0;
  // Mean L2 loss of the between-groups synthetic-gradient model over the
  // run; 0 without one.
  double between_sg_loss = 0.0;
};

class RecurrentJob {
 public:
  // Connects to every group of `spec` and configures it. Fails with the
  // first group's error, naming its address.
  static absl::StatusOr<std::unique_ptr<RecurrentJob>> Start(
      const v1::RecurrentJobSpec& spec);

  // Trains Copy or Repeat Copy sequences. The top group's output width must
  // be bits (Copy) or bits + 1 (Repeat Copy).
  absl::StatusOr<RecurrentJobSummary> RunCopy(const RecurrentCopyOptions& options);

 private:
  explicit RecurrentJob(v1::RecurrentJobSpec spec) : spec_(std::move(spec)) {}

  // Sends one chunk through the groups and returns the top group's reply.
  absl::StatusOr<v1::RecurrentChunkResponse> RunChunk(
      const SequenceBatch& sequences, int begin, bool sequence_start,
      double* between_sg_loss);

  v1::RecurrentJobSpec spec_;
  std::vector<std::unique_ptr<v1::RecurrentGroupService::Stub>> stubs_;
  int64_t next_chunk_id_ = 0;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_COORDINATOR_RECURRENT_JOB_H_
