// The synthgrad.v1.RecurrentGroupService: one LSTM group of a recurrent job,
// the whole core or one level of a stacked RNN.
//
// The top group contains the readout and the loss and returns dL/dx_t for the
// group below. A lower group returns its hidden sequence h_1..h_T. With
// dni_between_groups it updates at once from its between-groups
// synthetic-gradient model B(h_t), which predicts dL/dh_t and starts at
// zero, and the true gradient that arrives later only trains B. Without it
// the group holds the chunk until the true gradient arrives. Both kinds of
// group use the job's mode (BPTT, DNI, DNI+Aux) at their own chunk
// boundaries.
//
// Thread-safe: one mutex serialises the calls, since chunks are sequential.
#ifndef SYNTHGRAD_SERVICES_LAYER_RECURRENT_GROUP_H_
#define SYNTHGRAD_SERVICES_LAYER_RECURRENT_GROUP_H_

#include <deque>
#include <memory>
#include <optional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "common/recurrent_trainer.h"
#include "common/synthetic_gradient.h"
#include "synthgrad/v1/recurrent.grpc.pb.h"

namespace synthgrad {

// The state of one configured group, without gRPC.
class RecurrentGroup {
 public:
  // Fails with INVALID_ARGUMENT for an inconsistent spec or index.
  static absl::StatusOr<std::unique_ptr<RecurrentGroup>> Create(
      const v1::RecurrentJobSpec& spec, int group_index);

  absl::Status TrainChunk(const v1::RecurrentChunkRequest& request,
                          v1::RecurrentChunkResponse* response);
  absl::Status Gradient(const v1::RecurrentGradientRequest& request,
                        v1::RecurrentGradientResponse* response);

 private:
  RecurrentGroup() = default;

  // Validates the request's tensors and converts them to a chunk.
  absl::StatusOr<SequenceChunk> ToChunk(const v1::RecurrentChunkRequest& request,
                                        int* batch) const;

  bool top_ = false;
  bool has_group_below_ = false;
  bool dni_between_groups_ = false;
  int input_dim_ = 0;
  int units_ = 0;
  int output_dim_ = 0;
  OutputKind output_kind_ = OutputKind::kSigmoidBits;
  std::unique_ptr<RecurrentTrainer> trainer_;
  // Lower group with dni_between_groups: B(h_t).
  std::optional<SyntheticGradientModel> between_model_;

  int64_t next_chunk_id_ = 0;
  // Lower group: a chunk awaiting its true gradient.
  struct Pending {
    int64_t chunk_id = 0;
    bool sequence_ends = false;
    // h_1..h_T, the inputs of B when it trains.
    std::vector<Matrix> outputs;
  };
  // At most one entry when locked; up to kMaxAwaiting with DNI between
  // groups, where later chunks need not wait.
  std::deque<Pending> awaiting_;
};

class RecurrentGroupServiceImpl final
    : public v1::RecurrentGroupService::Service {
 public:
  grpc::Status Configure(grpc::ServerContext* context,
                         const v1::ConfigureRecurrentRequest* request,
                         v1::ConfigureRecurrentResponse* response) override;
  grpc::Status TrainChunk(grpc::ServerContext* context,
                          const v1::RecurrentChunkRequest* request,
                          v1::RecurrentChunkResponse* response) override;
  grpc::Status Gradient(grpc::ServerContext* context,
                        const v1::RecurrentGradientRequest* request,
                        v1::RecurrentGradientResponse* response) override;

 private:
  absl::Mutex mu_;
  std::unique_ptr<RecurrentGroup> group_ ABSL_GUARDED_BY(mu_);
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_LAYER_RECURRENT_GROUP_H_
