#include "services/coordinator/recurrent_job.h"

#include <chrono>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/tensor_proto.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

constexpr std::chrono::seconds kCallTimeout(60);

void SetDeadline(grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() + kCallTimeout);
}

absl::Status Annotate(const grpc::Status& status, const std::string& address,
                      const char* call) {
  absl::Status converted = FromGrpcStatus(status);
  if (converted.ok()) return converted;
  return absl::Status(converted.code(),
                      absl::StrCat(call, " to recurrent group at ", address,
                                   " failed: ", converted.message()));
}

}  // namespace

absl::StatusOr<std::unique_ptr<RecurrentJob>> RecurrentJob::Start(
    const v1::RecurrentJobSpec& spec) {
  std::unique_ptr<RecurrentJob> job(new RecurrentJob(spec));
  for (int i = 0; i < spec.groups_size(); ++i) {
    job->stubs_.push_back(v1::RecurrentGroupService::NewStub(
        MakeChannel(spec.groups(i).address())));
    v1::ConfigureRecurrentRequest request;
    *request.mutable_spec() = spec;
    request.set_group_index(i);
    v1::ConfigureRecurrentResponse response;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status status = Annotate(
        job->stubs_.back()->Configure(&context, request, &response),
        spec.groups(i).address(), "Configure");
    if (!status.ok()) return status;
  }
  return job;
}

absl::StatusOr<v1::RecurrentChunkResponse> RecurrentJob::RunChunk(
    const SequenceBatch& sequences, int begin, bool sequence_start,
    double* between_sg_loss) {
  const int truncation = spec_.truncation();
  const int end = std::min(begin + truncation, sequences.steps());
  const bool sequence_ends = end == sequences.steps();
  const int64_t chunk_id = next_chunk_id_++;
  const int top = spec_.groups_size() - 1;

  v1::RecurrentChunkRequest request;
  request.set_chunk_id(chunk_id);
  request.set_sequence_start(sequence_start);
  request.set_sequence_ends(sequence_ends);
  for (int t = begin; t < end; ++t) {
    MatrixToProto(sequences.inputs[t], request.add_inputs());
  }

  if (top > 0) {
    v1::RecurrentChunkResponse lower;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status status =
        Annotate(stubs_[0]->TrainChunk(&context, request, &lower),
                 spec_.groups(0).address(), "TrainChunk");
    if (!status.ok()) return status;
    request.clear_inputs();
    *request.mutable_inputs() = lower.outputs();
  }
  for (int t = begin; t < end; ++t) {
    v1::Tensor* target = request.add_target_bits();
    if (sequences.target_bits[t].size() > 0) {
      MatrixToProto(sequences.target_bits[t], target);
    }
  }
  v1::RecurrentChunkResponse response;
  {
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status status =
        Annotate(stubs_[top]->TrainChunk(&context, request, &response),
                 spec_.groups(top).address(), "TrainChunk");
    if (!status.ok()) return status;
  }
  if (top > 0) {
    v1::RecurrentGradientRequest gradient;
    gradient.set_chunk_id(chunk_id);
    *gradient.mutable_output_gradients() = response.input_gradients();
    v1::RecurrentGradientResponse reply;
    grpc::ClientContext context;
    SetDeadline(&context);
    absl::Status status =
        Annotate(stubs_[0]->Gradient(&context, gradient, &reply),
                 spec_.groups(0).address(), "Gradient");
    if (!status.ok()) return status;
    *between_sg_loss += reply.sg_loss();
  }
  return response;
}

absl::StatusOr<RecurrentJobSummary> RecurrentJob::RunCopy(
    const RecurrentCopyOptions& options) {
  std::mt19937_64 rng(options.seed);
  std::uniform_int_distribution<int> repeat_count(1, options.max_repeats);
  LengthCurriculum curriculum(options.threshold, options.window);
  RecurrentJobSummary summary;
  double between_sg_loss = 0.0;
  int64_t chunks = 0;
  for (int b = 0; b < options.batches; ++b) {
    const int length = curriculum.length();
    const SequenceBatch sequences =
        options.repeat
            ? MakeRepeatCopyBatch(options.batch, length, repeat_count(rng),
                                  options.max_repeats, options.bits, rng)
            : MakeCopyBatch(options.batch, length, options.bits, rng);
    double loss = 0.0;
    int64_t errors = 0;
    int64_t scored_bits = 0;
    for (int begin = 0; begin < sequences.steps(); begin += spec_.truncation()) {
      absl::StatusOr<v1::RecurrentChunkResponse> response =
          RunChunk(sequences, begin, begin == 0, &between_sg_loss);
      if (!response.ok()) return response.status();
      loss += response->loss();
      errors += response->errors();
      scored_bits += response->scored_steps() *
                     spec_.groups(spec_.groups_size() - 1).output_dim();
      ++chunks;
    }
    summary.loss_per_bit.push_back(loss / static_cast<double>(scored_bits));
    const double errors_per_sequence =
        static_cast<double>(errors) / options.batch;
    summary.errors_per_sequence.push_back(errors_per_sequence);
    curriculum.Record(errors_per_sequence);
  }
  summary.solved_length = curriculum.solved_length();
  summary.between_sg_loss = between_sg_loss / static_cast<double>(chunks);
  return summary;
}

}  // namespace synthgrad
