#include "common/recurrent_trainer.h"

#include <cmath>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/loss.h"

namespace synthgrad {
namespace {

v1::LayerSpec LinearLayer(int units) {
  v1::LayerSpec spec;
  spec.set_kind(v1::LayerSpec::KIND_LINEAR);
  spec.set_units(units);
  return spec;
}

v1::OptimizerSpec AdamSpec(float learning_rate) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.set_learning_rate(learning_rate);
  return spec;
}

// Scores the sigmoid readout of step rows [B, O] against `targets` and
// writes d(loss)/d(logits) into `gradient` when it is not null.
void ScoreBits(const Matrix& logits, const Matrix& targets, ChunkScore* score,
               Matrix* gradient) {
  // Sigmoid cross-entropy in its stable form max(z, 0) - z y + log(1 +
  // exp(-|z|)); its gradient is sigmoid(z) - y.
  const auto z = logits.array();
  const auto y = targets.array();
  score->loss += static_cast<double>(
      (z.max(0.0f) - z * y + (1.0f + (-z.abs()).exp()).log()).sum());
  score->errors += ((z > 0.0f).cast<float>() != y).count();
  score->scored_steps += logits.rows();
  if (gradient != nullptr) {
    *gradient = ((1.0f + (-z).exp()).inverse() - y).matrix();
  }
}

}  // namespace

Matrix ConcatenateState(const LstmState& state) {
  Matrix joined(state.h.rows(), state.h.cols() + state.c.cols());
  joined.leftCols(state.h.cols()) = state.h;
  joined.rightCols(state.c.cols()) = state.c;
  return joined;
}

LstmState SplitState(const Matrix& joined) {
  const Eigen::Index units = joined.cols() / 2;
  return {joined.leftCols(units), joined.rightCols(units)};
}

absl::StatusOr<RecurrentCore> RecurrentCore::Create(
    const RecurrentCoreOptions& options) {
  absl::StatusOr<Lstm> lstm =
      Lstm::Create(options.input_dim, options.units, options.seed);
  if (!lstm.ok()) return lstm.status();
  if (options.output_dim < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "recurrent output width must be 0 (no readout) or positive, got ",
        options.output_dim));
  }
  std::optional<Network> readout;
  if (options.output_dim > 0) {
    absl::StatusOr<Network> created =
        Network::Create(options.units, {LinearLayer(options.output_dim)},
                        options.seed + 1, /*zero_last_linear=*/false);
    if (!created.ok()) return created.status();
    readout = *std::move(created);
  }
  std::optional<Network> auxiliary_head;
  if (options.auxiliary_head) {
    absl::StatusOr<Network> head =
        Network::Create(options.units, {LinearLayer(2 * options.units)},
                        options.seed + 2, /*zero_last_linear=*/true);
    if (!head.ok()) return head.status();
    auxiliary_head = *std::move(head);
  }
  return RecurrentCore(options, *std::move(lstm), std::move(readout),
                       std::move(auxiliary_head));
}

void RecurrentCore::ZeroGradients() {
  lstm_.ZeroGradients();
  if (readout_.has_value()) readout_->ZeroGradients();
  if (auxiliary_head_.has_value()) auxiliary_head_->ZeroGradients();
}

LstmState RecurrentCore::Forward(const SequenceChunk& chunk,
                                 const LstmState& initial, Pass* pass,
                                 ChunkScore* score) const {
  std::vector<Matrix> outputs;
  const LstmState final_state = lstm_.Forward(
      chunk.inputs, initial, &outputs,
      pass != nullptr ? &pass->lstm_cache : nullptr);
  if (pass == nullptr && score == nullptr) return final_state;

  const int steps = chunk.steps();
  const Eigen::Index batch = initial.h.rows();
  Matrix stacked(steps * batch, options_.units);
  for (int t = 0; t < steps; ++t) {
    stacked.middleRows(t * batch, batch) = outputs[t];
  }
  if (!readout_.has_value()) {
    if (score != nullptr) *score = ChunkScore();
    if (pass != nullptr) {
      pass->stacked_outputs = std::move(stacked);
      pass->final_state = final_state;
    }
    return final_state;
  }
  Network::Trace trace;
  const Matrix logits =
      readout_->Forward(stacked, pass != nullptr ? &trace : nullptr);

  ChunkScore local;
  Matrix logit_gradient;
  if (pass != nullptr) logit_gradient = Matrix::Zero(logits.rows(), logits.cols());
  for (int t = 0; t < steps; ++t) {
    const Matrix step_logits = logits.middleRows(t * batch, batch);
    if (options_.output_kind == OutputKind::kSigmoidBits) {
      if (t >= static_cast<int>(chunk.target_bits.size()) ||
          chunk.target_bits[t].size() == 0) {
        continue;
      }
      Matrix step_gradient;
      ScoreBits(step_logits, chunk.target_bits[t], &local,
                pass != nullptr ? &step_gradient : nullptr);
      if (pass != nullptr) {
        logit_gradient.middleRows(t * batch, batch) = step_gradient;
      }
    } else {
      if (t >= static_cast<int>(chunk.target_classes.size()) ||
          chunk.target_classes[t].empty()) {
        continue;
      }
      const LossResult result = SoftmaxCrossEntropy(
          step_logits, chunk.target_classes[t], pass != nullptr);
      local.loss += result.mean_loss * static_cast<double>(batch);
      local.errors += batch - result.correct;
      local.scored_steps += batch;
      if (pass != nullptr) {
        logit_gradient.middleRows(t * batch, batch) = result.gradient;
      }
    }
  }
  if (score != nullptr) *score = local;
  if (pass != nullptr) {
    pass->stacked_outputs = std::move(stacked);
    pass->readout_trace = std::move(trace);
    pass->logit_gradient = std::move(logit_gradient);
    pass->final_state = final_state;
    pass->score = local;
  }
  return final_state;
}

LstmState RecurrentCore::Backward(const Pass& pass,
                                  const LstmState& final_gradient,
                                  const Matrix* auxiliary_target,
                                  float auxiliary_weight,
                                  const std::vector<Matrix>* output_gradients,
                                  std::vector<Matrix>* input_gradients) {
  const int steps = static_cast<int>(pass.lstm_cache.inputs.size());
  const Eigen::Index batch = final_gradient.h.rows();
  auto split_steps = [steps, batch](const Matrix& stacked) {
    std::vector<Matrix> per_step(steps);
    for (int t = 0; t < steps; ++t) {
      per_step[t] = stacked.middleRows(t * batch, batch);
    }
    return per_step;
  };

  std::vector<Matrix> step_gradients(steps);
  if (readout_.has_value()) {
    step_gradients = split_steps(readout_->Backward(
        pass.readout_trace, pass.logit_gradient, /*want_input_gradient=*/true));
  }
  if (output_gradients != nullptr) {
    for (int t = 0; t < steps && t < static_cast<int>(output_gradients->size());
         ++t) {
      const Matrix& extra = (*output_gradients)[t];
      if (extra.size() == 0) continue;
      if (step_gradients[t].size() == 0) {
        step_gradients[t] = extra;
      } else {
        step_gradients[t] += extra;
      }
    }
  }
  const LstmState initial_gradient = lstm_.Backward(
      pass.lstm_cache, step_gradients, final_gradient, input_gradients);
  if (auxiliary_target == nullptr || !auxiliary_head_.has_value()) {
    return initial_gradient;
  }

  // The auxiliary loss gets its own pass through the LSTM. Its parameter
  // gradient adds to the task's, but its initial-state gradient is dropped:
  // it is no gradient of the task loss, so it must not enter the target of
  // the synthetic-gradient model.
  Network::Trace trace;
  Matrix residual = auxiliary_head_->Forward(pass.stacked_outputs, &trace);
  for (Eigen::Index row = 0; row < residual.rows(); row += batch) {
    residual.middleRows(row, batch) -= *auxiliary_target;
  }
  residual *= auxiliary_weight;
  const Matrix auxiliary_gradient =
      auxiliary_head_->Backward(trace, residual, /*want_input_gradient=*/true);
  lstm_.Backward(pass.lstm_cache, split_steps(auxiliary_gradient),
                 LstmState::Zero(static_cast<int>(batch), options_.units),
                 /*input_gradients=*/nullptr);
  return initial_gradient;
}

absl::StatusOr<std::unique_ptr<RecurrentTrainer>> RecurrentTrainer::Create(
    const RecurrentCoreOptions& core_options,
    const RecurrentTrainerOptions& options) {
  RecurrentCoreOptions adjusted = core_options;
  adjusted.auxiliary_head = options.mode == RecurrentMode::kDniAux;
  absl::StatusOr<RecurrentCore> core = RecurrentCore::Create(adjusted);
  if (!core.ok()) return core.status();
  if (!(options.sg_scale >= 0.0f) || !(options.auxiliary_weight >= 0.0f) ||
      !(options.gradient_clip_norm >= 0.0f)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "sg_scale, auxiliary_weight and gradient_clip_norm must be >= 0, got ",
        options.sg_scale, ", ", options.auxiliary_weight, " and ",
        options.gradient_clip_norm));
  }

  std::unique_ptr<Optimizer> optimizers[3];
  for (auto& optimizer : optimizers) {
    absl::StatusOr<std::unique_ptr<Optimizer>> created =
        Optimizer::Create(AdamSpec(options.learning_rate));
    if (!created.ok()) return created.status();
    optimizer = *std::move(created);
  }

  std::optional<SyntheticGradientModel> sg_model;
  if (options.mode != RecurrentMode::kBptt) {
    v1::SyntheticGradientSpec spec;
    for (int units : options.sg_hidden_units) spec.add_hidden_units(units);
    *spec.mutable_optimizer() = AdamSpec(options.sg_learning_rate);
    absl::StatusOr<SyntheticGradientModel> model = SyntheticGradientModel::Create(
        2 * core_options.units, /*num_classes=*/0, spec, core_options.seed + 3);
    if (!model.ok()) return model.status();
    sg_model = *std::move(model);
  }
  return std::unique_ptr<RecurrentTrainer>(new RecurrentTrainer(
      *std::move(core), options, std::move(optimizers[0]),
      std::move(optimizers[1]), std::move(optimizers[2]), std::move(sg_model)));
}

void RecurrentTrainer::StartSequences(int batch) {
  state_ = LstmState::Zero(batch, core_.options().units);
  at_sequence_start_ = true;
}

LstmState RecurrentTrainer::PredictSyntheticGradient(
    const LstmState& state) const {
  if (!sg_model_.has_value()) {
    return LstmState::Zero(static_cast<int>(state.h.rows()),
                           static_cast<int>(state.h.cols()));
  }
  return SplitState(sg_model_->Predict(ConcatenateState(state), {}));
}

float RecurrentTrainer::GradientScale(int batch) {
  const float scale = 1.0f / static_cast<float>(batch);
  if (options_.gradient_clip_norm <= 0.0f) return scale;
  double squared = 0.0;
  auto add = [&squared](const std::vector<Matrix>& gradients) {
    for (const Matrix& g : gradients) squared += g.cast<double>().squaredNorm();
  };
  add(core_.lstm().gradients());
  if (core_.readout() != nullptr) add(core_.readout()->gradients());
  if (core_.auxiliary_head() != nullptr) add(core_.auxiliary_head()->gradients());
  const double norm = std::sqrt(squared) * scale;
  if (norm <= options_.gradient_clip_norm) return scale;
  return static_cast<float>(scale * options_.gradient_clip_norm / norm);
}

ChunkTrainResult RecurrentTrainer::TrainChunk(const SequenceChunk& chunk,
                                              bool sequence_ends) {
  BeginChunk(chunk);
  return FinishChunk(sequence_ends, nullptr, nullptr);
}

std::vector<Matrix> RecurrentTrainer::BeginChunk(const SequenceChunk& chunk) {
  pending_start_ = state_;
  pending_.emplace();
  core_.Forward(chunk, state_, &*pending_, nullptr);
  const Eigen::Index batch = state_.h.rows();
  std::vector<Matrix> outputs;
  for (int t = 0; t < chunk.steps(); ++t) {
    outputs.push_back(pending_->stacked_outputs.middleRows(t * batch, batch));
  }
  return outputs;
}

ChunkTrainResult RecurrentTrainer::FinishChunk(
    bool sequence_ends, const std::vector<Matrix>* output_gradients,
    std::vector<Matrix>* input_gradients) {
  const RecurrentCore::Pass& pass = *pending_;
  const LstmState& start = pending_start_;
  const int batch = static_cast<int>(start.h.rows());

  // The gradient injected at the chunk's end, lambda M(s_T), which is also
  // the auxiliary task's target. It is zero after the last chunk of a
  // sequence.
  LstmState injected = LstmState::Zero(batch, core_.options().units);
  Matrix injected_joined;
  if (sg_model_.has_value()) {
    injected_joined = Matrix::Zero(batch, 2 * core_.options().units);
    if (!sequence_ends) {
      injected_joined = options_.sg_scale *
                        sg_model_->Predict(ConcatenateState(pass.final_state), {});
      injected = SplitState(injected_joined);
    }
  }

  core_.ZeroGradients();
  const bool auxiliary = options_.mode == RecurrentMode::kDniAux;
  const LstmState start_gradient = core_.Backward(
      pass, injected, auxiliary ? &injected_joined : nullptr,
      options_.auxiliary_weight, output_gradients, input_gradients);

  const float scale = GradientScale(batch);
  lstm_optimizer_->Step(core_.lstm().parameters(), core_.lstm().gradients(),
                        scale);
  if (core_.readout() != nullptr) {
    readout_optimizer_->Step(core_.readout()->parameters(),
                             core_.readout()->gradients(), scale);
  }
  if (core_.auxiliary_head() != nullptr) {
    auxiliary_optimizer_->Step(core_.auxiliary_head()->parameters(),
                               core_.auxiliary_head()->gradients(), scale);
  }

  ChunkTrainResult result;
  result.score = pass.score;
  if (sg_model_.has_value() && !at_sequence_start_) {
    const SyntheticGradientModel::TrainResult trained = sg_model_->Train(
        ConcatenateState(start), {}, ConcatenateState(start_gradient));
    result.sg_loss = trained.loss;
    result.sg_cosine = trained.cosine;
    result.sg_trained = true;
  }

  state_ = pass.final_state;
  at_sequence_start_ = false;
  pending_.reset();
  return result;
}

}  // namespace synthgrad
