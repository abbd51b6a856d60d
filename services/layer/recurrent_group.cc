#include "services/layer/recurrent_group.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/tensor_proto.h"
#include "glog/logging.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

// Largest chunk and batch a group accepts, to bound memory per request.
constexpr int kMaxChunkSteps = 1024;
constexpr int kMaxBatch = 4096;
// Chunks a decoupled lower group keeps for their late true gradients.
constexpr size_t kMaxAwaiting = 64;

absl::StatusOr<RecurrentMode> ModeFromProto(v1::RecurrentMode mode) {
  switch (mode) {
    case v1::RECURRENT_MODE_BPTT:
      return RecurrentMode::kBptt;
    case v1::RECURRENT_MODE_DNI:
      return RecurrentMode::kDni;
    case v1::RECURRENT_MODE_DNI_AUX:
      return RecurrentMode::kDniAux;
    default:
      return absl::InvalidArgumentError(
          absl::StrCat("recurrent mode must be BPTT, DNI or DNI_AUX, got ",
                       v1::RecurrentMode_Name(mode)));
  }
}

v1::OptimizerSpec Adam(float learning_rate) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.set_learning_rate(learning_rate);
  return spec;
}

}  // namespace

absl::StatusOr<std::unique_ptr<RecurrentGroup>> RecurrentGroup::Create(
    const v1::RecurrentJobSpec& spec, int group_index) {
  const int groups = spec.groups_size();
  if (groups < 1 || groups > 2) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a recurrent job has 1 or 2 groups, got ", groups));
  }
  if (group_index < 0 || group_index >= groups) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group_index must be in [0, ", groups, "), got ", group_index));
  }
  if (spec.truncation() <= 0 || spec.truncation() > kMaxChunkSteps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "truncation must be in [1, ", kMaxChunkSteps, "], got ",
        spec.truncation()));
  }
  absl::StatusOr<RecurrentMode> mode = ModeFromProto(spec.mode());
  if (!mode.ok()) return mode.status();

  const v1::RecurrentGroupSpec& own = spec.groups(group_index);
  std::unique_ptr<RecurrentGroup> group(new RecurrentGroup());
  group->top_ = group_index == groups - 1;
  group->has_group_below_ = group_index > 0;
  group->dni_between_groups_ = spec.dni_between_groups();
  group->input_dim_ = own.input_dim();
  group->units_ = own.units();
  group->output_dim_ = own.output_dim();
  if (group_index > 0 && own.input_dim() != spec.groups(group_index - 1).units()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group ", group_index, " input_dim must equal the units of group ",
        group_index - 1, ", ", spec.groups(group_index - 1).units(), ", got ",
        own.input_dim()));
  }
  if (group->top_ != (own.output_dim() > 0)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "group ", group_index, ": only the top group has a readout "
        "(output_dim > 0), got output_dim ", own.output_dim()));
  }
  if (group->top_) {
    switch (own.output_kind()) {
      case v1::RecurrentGroupSpec::OUTPUT_KIND_SIGMOID_BITS:
        group->output_kind_ = OutputKind::kSigmoidBits;
        break;
      case v1::RecurrentGroupSpec::OUTPUT_KIND_SOFTMAX:
        group->output_kind_ = OutputKind::kSoftmaxClasses;
        break;
      default:
        return absl::InvalidArgumentError(
            "the top group's output_kind must be SIGMOID_BITS or SOFTMAX");
    }
  }

  RecurrentCoreOptions core;
  core.input_dim = own.input_dim();
  core.units = own.units();
  core.output_dim = own.output_dim();
  core.output_kind = group->output_kind_;
  core.seed = spec.seed() + 10 * static_cast<uint64_t>(group_index);
  RecurrentTrainerOptions options;
  options.mode = *mode;
  options.learning_rate = spec.learning_rate();
  options.sg_learning_rate = spec.sg_learning_rate();
  options.sg_scale = spec.sg_scale() == 0.0f ? 0.1f : spec.sg_scale();
  options.auxiliary_weight = spec.auxiliary_weight();
  options.gradient_clip_norm = spec.gradient_clip_norm();
  absl::StatusOr<std::unique_ptr<RecurrentTrainer>> trainer =
      RecurrentTrainer::Create(core, options);
  if (!trainer.ok()) return trainer.status();
  group->trainer_ = *std::move(trainer);

  if (!group->top_ && group->dni_between_groups_) {
    v1::SyntheticGradientSpec sg;
    *sg.mutable_optimizer() = Adam(spec.sg_learning_rate());
    absl::StatusOr<SyntheticGradientModel> model = SyntheticGradientModel::Create(
        own.units(), /*num_classes=*/0, sg, core.seed + 5);
    if (!model.ok()) return model.status();
    group->between_model_ = *std::move(model);
  }
  return group;
}

absl::StatusOr<SequenceChunk> RecurrentGroup::ToChunk(
    const v1::RecurrentChunkRequest& request, int* batch) const {
  const int steps = request.inputs_size();
  if (steps < 1 || steps > kMaxChunkSteps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "a chunk has 1 to ", kMaxChunkSteps, " input steps, got ", steps));
  }
  SequenceChunk chunk;
  TensorLimits limits;
  limits.cols = input_dim_;
  limits.max_rows = kMaxBatch;
  for (int t = 0; t < steps; ++t) {
    absl::StatusOr<Matrix> input = MatrixFromProto(
        request.inputs(t), limits, absl::StrCat("inputs[", t, "]"));
    if (!input.ok()) return input.status();
    limits.rows = input->rows();  // every step has the first step's rows
    chunk.inputs.push_back(*std::move(input));
  }
  *batch = static_cast<int>(limits.rows);
  if (!top_) return chunk;

  if (output_kind_ == OutputKind::kSigmoidBits) {
    if (request.target_bits_size() != steps) {
      return absl::InvalidArgumentError(absl::StrCat(
          "the top group needs one target_bits tensor per step, ", steps,
          ", got ", request.target_bits_size()));
    }
    TensorLimits target_limits;
    target_limits.rows = *batch;
    target_limits.cols = output_dim_;
    for (int t = 0; t < steps; ++t) {
      if (request.target_bits(t).shape_size() == 0) {
        chunk.target_bits.emplace_back();
        continue;
      }
      absl::StatusOr<Matrix> target = MatrixFromProto(
          request.target_bits(t), target_limits,
          absl::StrCat("target_bits[", t, "]"));
      if (!target.ok()) return target.status();
      chunk.target_bits.push_back(*std::move(target));
    }
    return chunk;
  }
  if (request.target_classes_size() != steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the top group needs one target_classes entry per step, ", steps,
        ", got ", request.target_classes_size()));
  }
  for (int t = 0; t < steps; ++t) {
    const auto& ids = request.target_classes(t).ids();
    if (!ids.empty() && ids.size() != *batch) {
      return absl::InvalidArgumentError(absl::StrCat(
          "target_classes[", t, "] must hold 0 or ", *batch, " ids, got ",
          ids.size()));
    }
    for (int32_t id : ids) {
      if (id < 0 || id >= output_dim_) {
        return absl::InvalidArgumentError(absl::StrCat(
            "target_classes[", t, "] id must be in [0, ", output_dim_,
            "), got ", id));
      }
    }
    chunk.target_classes.emplace_back(ids.begin(), ids.end());
  }
  return chunk;
}

absl::Status RecurrentGroup::TrainChunk(const v1::RecurrentChunkRequest& request,
                                        v1::RecurrentChunkResponse* response) {
  if (request.chunk_id() != next_chunk_id_) {
    return absl::FailedPreconditionError(absl::StrCat(
        "expected chunk ", next_chunk_id_, ", got ", request.chunk_id()));
  }
  if (!between_model_.has_value() && !awaiting_.empty()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "chunk ", awaiting_.front().chunk_id,
        " still awaits its gradient; send Gradient first"));
  }
  if (awaiting_.size() >= kMaxAwaiting) {
    return absl::ResourceExhaustedError(absl::StrCat(
        kMaxAwaiting, " chunks await their gradient; send Gradient first"));
  }
  int batch = 0;
  absl::StatusOr<SequenceChunk> chunk = ToChunk(request, &batch);
  if (!chunk.ok()) return chunk.status();
  if (request.sequence_start()) {
    trainer_->StartSequences(batch);
  } else if (trainer_->state().h.rows() != batch) {
    return absl::InvalidArgumentError(absl::StrCat(
        "batch changed from ", trainer_->state().h.rows(), " to ", batch,
        " without sequence_start"));
  }
  ++next_chunk_id_;

  const std::vector<Matrix> outputs = trainer_->BeginChunk(*chunk);
  if (top_) {
    std::vector<Matrix> input_gradients;
    const ChunkTrainResult result = trainer_->FinishChunk(
        request.sequence_ends(), nullptr,
        has_group_below_ ? &input_gradients : nullptr);
    response->set_loss(result.score.loss);
    response->set_errors(result.score.errors);
    response->set_scored_steps(result.score.scored_steps);
    for (const Matrix& g : input_gradients) {
      MatrixToProto(g, response->add_input_gradients());
    }
    return absl::OkStatus();
  }

  for (const Matrix& h : outputs) MatrixToProto(h, response->add_outputs());
  if (between_model_.has_value()) {
    // Decoupled: update now from B(h_t); the true gradient trains B later.
    std::vector<Matrix> synthetic;
    for (const Matrix& h : outputs) {
      synthetic.push_back(between_model_->Predict(h, {}));
    }
    trainer_->FinishChunk(request.sequence_ends(), &synthetic, nullptr);
  }
  awaiting_.push_back(Pending{request.chunk_id(), request.sequence_ends(), outputs});
  return absl::OkStatus();
}

absl::Status RecurrentGroup::Gradient(const v1::RecurrentGradientRequest& request,
                                      v1::RecurrentGradientResponse* response) {
  if (top_) {
    return absl::FailedPreconditionError(
        "the top group computes its own gradient; Gradient is for lower groups");
  }
  auto pending = awaiting_.begin();
  while (pending != awaiting_.end() && pending->chunk_id != request.chunk_id()) {
    ++pending;
  }
  if (pending == awaiting_.end()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "no chunk ", request.chunk_id(), " awaits a gradient"));
  }
  const int steps = static_cast<int>(pending->outputs.size());
  if (request.output_gradients_size() != steps) {
    return absl::InvalidArgumentError(absl::StrCat(
        "expected ", steps, " output_gradients, got ",
        request.output_gradients_size()));
  }
  TensorLimits limits;
  limits.rows = pending->outputs[0].rows();
  limits.cols = units_;
  std::vector<Matrix> gradients;
  for (int t = 0; t < steps; ++t) {
    absl::StatusOr<Matrix> g = MatrixFromProto(
        request.output_gradients(t), limits,
        absl::StrCat("output_gradients[", t, "]"));
    if (!g.ok()) return g.status();
    gradients.push_back(*std::move(g));
  }

  if (between_model_.has_value()) {
    Matrix inputs(steps * limits.rows, units_);
    Matrix targets(steps * limits.rows, units_);
    for (int t = 0; t < steps; ++t) {
      inputs.middleRows(t * limits.rows, limits.rows) = pending->outputs[t];
      targets.middleRows(t * limits.rows, limits.rows) = gradients[t];
    }
    response->set_sg_loss(between_model_->Train(inputs, {}, targets).loss);
  } else {
    trainer_->FinishChunk(pending->sequence_ends, &gradients, nullptr);
  }
  awaiting_.erase(pending);
  return absl::OkStatus();
}

grpc::Status RecurrentGroupServiceImpl::Configure(
    grpc::ServerContext* context, const v1::ConfigureRecurrentRequest* request,
    v1::ConfigureRecurrentResponse* response) {
  absl::StatusOr<std::unique_ptr<RecurrentGroup>> group =
      RecurrentGroup::Create(request->spec(), request->group_index());
  if (!group.ok()) {
    LOG(WARNING) << "recurrent Configure rejected: " << group.status();
    return ToGrpcStatus(group.status());
  }
  absl::MutexLock lock(&mu_);
  group_ = *std::move(group);
  LOG(INFO) << "recurrent group " << request->group_index() << " of job \""
            << request->spec().name() << "\" configured";
  return grpc::Status::OK;
}

grpc::Status RecurrentGroupServiceImpl::TrainChunk(
    grpc::ServerContext* context, const v1::RecurrentChunkRequest* request,
    v1::RecurrentChunkResponse* response) {
  absl::MutexLock lock(&mu_);
  if (group_ == nullptr) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "no recurrent group configured; call Configure first"));
  }
  return ToGrpcStatus(group_->TrainChunk(*request, response));
}

grpc::Status RecurrentGroupServiceImpl::Gradient(
    grpc::ServerContext* context, const v1::RecurrentGradientRequest* request,
    v1::RecurrentGradientResponse* response) {
  absl::MutexLock lock(&mu_);
  if (group_ == nullptr) {
    return ToGrpcStatus(absl::FailedPreconditionError(
        "no recurrent group configured; call Configure first"));
  }
  return ToGrpcStatus(group_->Gradient(*request, response));
}

}  // namespace synthgrad
