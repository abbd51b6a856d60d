// Truncated backpropagation through time (BPTT) for an LSTM, with or without
// a decoupled neural interface (DNI) at the truncation boundary.
//
// A sequence is cut into chunks of T steps. The LSTM state (h, c) is carried
// from one chunk to the next as a constant, so no true gradient crosses a
// chunk boundary. The modes differ in the gradient injected at the end of a
// chunk, d(future loss)/d(h_T, c_T):
//   kBptt:    zero, plain truncated BPTT.
//   kDni:     lambda * M(h_T, c_T), where M is a synthetic-gradient model on
//             the LSTM state and lambda the sg_scale, 0.1 by default as in
//             the recurrent experiments of Jaderberg et al. 2017,
//             "Decoupled Neural Interfaces using Synthetic Gradients".
//   kDniAux:  kDni plus an auxiliary task: a linear head on every h_t of
//             the chunk predicts lambda M(h_T, c_T), the synthetic gradient
//             injected at the chunk's end, and its L2 loss trains the LSTM
//             too. The target is the injected (scaled) value so that the
//             auxiliary loss stays small next to the task loss.
//
// Training target of M. Backpropagating the chunk with the injected
// gradient gives g_0 = dL_chunk/ds_0 + lambda J^T M(s_T), where s = (h, c),
// L_chunk the chunk's own loss and J = ds_T/ds_0. M(s_0) is regressed onto
// g_0. The bootstrapped term enters with the same factor lambda that scales
// the injected gradient. So M's fixed point weights the true gradient of
// the k-th later chunk by lambda^(k-1), and the injected lambda M weights
// it by lambda^k. One backward pass serves both the parameter update and
// the target. At the end of a sequence the injected
// gradient is zero, so the last chunk's target is its true gradient alone.
//
// Losses are summed over scored steps and averaged over the batch; Adam
// steps once per chunk.
#ifndef SYNTHGRAD_COMMON_RECURRENT_TRAINER_H_
#define SYNTHGRAD_COMMON_RECURRENT_TRAINER_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "absl/status/statusor.h"
#include "common/lstm.h"
#include "common/network.h"
#include "common/optimizer.h"
#include "common/synthetic_gradient.h"
#include "common/tensor.h"

namespace synthgrad {

// Loss of the readout y_t = h_t W + b.
enum class OutputKind {
  // Independent bits: sigmoid cross-entropy against targets in {0, 1}.
  kSigmoidBits,
  // One class per step: softmax cross-entropy against a class id.
  kSoftmaxClasses,
};

// T consecutive steps of a batch of B sequences.
struct SequenceChunk {
  // T matrices [B, I].
  std::vector<Matrix> inputs;
  // kSigmoidBits: per step the target bits [B, O], or an empty matrix for a
  // step whose output is not scored.
  std::vector<Matrix> target_bits;
  // kSoftmaxClasses: per step B class ids in [0, O), or empty when not
  // scored.
  std::vector<std::vector<int32_t>> target_classes;

  int steps() const { return static_cast<int>(inputs.size()); }
};

struct RecurrentCoreOptions {
  int input_dim = 0;
  int units = 0;
  // Width of the readout; 0 builds a core without readout or loss, such as
  // the lower group of a stacked RNN, whose output gradients come from
  // above.
  int output_dim = 0;
  OutputKind output_kind = OutputKind::kSigmoidBits;
  // Adds the DNI+Aux head, a linear map from h_t [B, H] to a predicted
  // synthetic gradient [B, 2H]; its weights start at zero.
  bool auxiliary_head = false;
  uint64_t seed = 1;
};

// Loss and error counts of one pass over a chunk.
struct ChunkScore {
  // Summed over scored steps and examples: nats for softmax, nats summed
  // over bits for sigmoid outputs.
  double loss = 0.0;
  // Scored (example, step) pairs.
  int64_t scored_steps = 0;
  // kSigmoidBits: output bits on the wrong side of 0.5, summed.
  // kSoftmaxClasses: steps whose largest logit is not the target.
  int64_t errors = 0;
};

// The LSTM with its optional readout and, for DNI+Aux, the auxiliary head.
// Parameter gradients accumulate across Backward calls until ZeroGradients.
class RecurrentCore {
 public:
  // Cached values of one Forward call, for Backward.
  struct Pass {
    Lstm::Cache lstm_cache;
    // h_1..h_T stacked step-major, [T * B, H].
    Matrix stacked_outputs;
    Network::Trace readout_trace;
    // d(chunk loss)/d(readout logits), [T * B, O], zero rows where unscored;
    // empty without readout.
    Matrix logit_gradient;
    LstmState final_state;
    ChunkScore score;
  };

  static absl::StatusOr<RecurrentCore> Create(
      const RecurrentCoreOptions& options);

  const RecurrentCoreOptions& options() const { return options_; }

  // Runs the chunk from `initial`. With `pass` null nothing is cached.
  // Returns the final state; `score` receives the loss when not null.
  LstmState Forward(const SequenceChunk& chunk, const LstmState& initial,
                    Pass* pass, ChunkScore* score) const;

  // Adds the gradient of the chunk's loss, plus <final_gradient, s_T>, plus
  // sum_t <output_gradients[t], h_t> when `output_gradients` is not null,
  // plus auxiliary_weight * 0.5 sum_t ||A(h_t) - auxiliary_target||^2 when
  // `auxiliary_target` is not null, to the parameter gradients. Returns the
  // gradient of all but the auxiliary term with respect to the initial
  // state. The auxiliary term is left out because it is no gradient of the
  // task loss. `input_gradients`, when not null, receives d/dx_t of the same
  // terms.
  LstmState Backward(const Pass& pass, const LstmState& final_gradient,
                     const Matrix* auxiliary_target, float auxiliary_weight,
                     const std::vector<Matrix>* output_gradients = nullptr,
                     std::vector<Matrix>* input_gradients = nullptr);

  Lstm& lstm() { return lstm_; }
  const Lstm& lstm() const { return lstm_; }
  // Null without readout.
  Network* readout() { return readout_.has_value() ? &*readout_ : nullptr; }
  Network* auxiliary_head() {
    return auxiliary_head_.has_value() ? &*auxiliary_head_ : nullptr;
  }
  void ZeroGradients();

 private:
  RecurrentCore(RecurrentCoreOptions options, Lstm lstm,
                std::optional<Network> readout,
                std::optional<Network> auxiliary_head)
      : options_(options),
        lstm_(std::move(lstm)),
        readout_(std::move(readout)),
        auxiliary_head_(std::move(auxiliary_head)) {}

  RecurrentCoreOptions options_;
  Lstm lstm_;
  std::optional<Network> readout_;
  std::optional<Network> auxiliary_head_;
};

enum class RecurrentMode { kBptt, kDni, kDniAux };

struct RecurrentTrainerOptions {
  RecurrentMode mode = RecurrentMode::kBptt;
  // Adam learning rate of the LSTM and its heads.
  float learning_rate = 1e-3f;
  // Factor lambda on the injected synthetic gradient and on the bootstrapped
  // term of M's target.
  float sg_scale = 0.1f;
  // Weight of the DNI+Aux loss relative to the task loss.
  float auxiliary_weight = 1.0f;
  // Hidden widths of M; empty makes M linear. The output layer starts at 0.
  std::vector<int> sg_hidden_units;
  float sg_learning_rate = 1e-3f;
  // Rescales the batch-averaged parameter gradient of the core to at most
  // this global L2 norm; 0 disables clipping.
  float gradient_clip_norm = 1.0f;
};

// Result of one TrainChunk call.
struct ChunkTrainResult {
  ChunkScore score;
  // L2 loss of M at the chunk's start state against its target, before the
  // update; 0 when M was not trained on this chunk.
  double sg_loss = 0.0;
  double sg_cosine = 0.0;
  bool sg_trained = false;
};

class RecurrentTrainer {
 public:
  static absl::StatusOr<std::unique_ptr<RecurrentTrainer>> Create(
      const RecurrentCoreOptions& core_options,
      const RecurrentTrainerOptions& options);

  // Starts new sequences: the carried state becomes zero for `batch` rows.
  void StartSequences(int batch);

  // Trains on the next chunk of the current sequences and carries the final
  // state. `sequence_ends` marks the last chunk, after which no future loss
  // exists, so the injected gradient is zero.
  ChunkTrainResult TrainChunk(const SequenceChunk& chunk, bool sequence_ends);

  // TrainChunk in two halves, for a group whose output gradients arrive
  // from another group. BeginChunk runs the chunk forward and returns
  // h_1..h_T; FinishChunk must follow before the next BeginChunk. It adds
  // `output_gradients` (per step [B, H], or null) to the loss gradient,
  // updates, trains M and carries the state. `input_gradients`, when not
  // null, receives dL/dx_t for the group below.
  std::vector<Matrix> BeginChunk(const SequenceChunk& chunk);
  ChunkTrainResult FinishChunk(bool sequence_ends,
                               const std::vector<Matrix>* output_gradients,
                               std::vector<Matrix>* input_gradients);

  // Returns the synthetic gradient M(h, c) as a state gradient, unscaled;
  // zero in kBptt mode.
  LstmState PredictSyntheticGradient(const LstmState& state) const;

  const LstmState& state() const { return state_; }
  RecurrentCore& core() { return core_; }
  const RecurrentTrainerOptions& options() const { return options_; }

 private:
  RecurrentTrainer(RecurrentCore core, RecurrentTrainerOptions options,
                   std::unique_ptr<Optimizer> lstm_optimizer,
                   std::unique_ptr<Optimizer> readout_optimizer,
                   std::unique_ptr<Optimizer> auxiliary_optimizer,
                   std::optional<SyntheticGradientModel> sg_model)
      : core_(std::move(core)),
        options_(std::move(options)),
        lstm_optimizer_(std::move(lstm_optimizer)),
        readout_optimizer_(std::move(readout_optimizer)),
        auxiliary_optimizer_(std::move(auxiliary_optimizer)),
        sg_model_(std::move(sg_model)) {}

  // Scales the gradients for one Adam step: 1/B, reduced further so the
  // global norm stays within gradient_clip_norm.
  float GradientScale(int batch);

  RecurrentCore core_;
  RecurrentTrainerOptions options_;
  // Adam keeps per-entry state, so one optimizer per parameter list is the
  // same update as one optimizer over all of them.
  std::unique_ptr<Optimizer> lstm_optimizer_;
  std::unique_ptr<Optimizer> readout_optimizer_;
  std::unique_ptr<Optimizer> auxiliary_optimizer_;
  std::optional<SyntheticGradientModel> sg_model_;
  LstmState state_;
  // The chunk between BeginChunk and FinishChunk.
  std::optional<RecurrentCore::Pass> pending_;
  LstmState pending_start_;
  // True until the first chunk of the current sequences has been trained:
  // the zero start state is not a truncation boundary, so M is not trained
  // there.
  bool at_sequence_start_ = true;
};

// Concatenates h and c into [B, 2H], the input and output layout of M.
Matrix ConcatenateState(const LstmState& state);
// Splits [B, 2H] into (h, c).
LstmState SplitState(const Matrix& joined);

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_RECURRENT_TRAINER_H_
