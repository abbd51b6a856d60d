// Recurrent jobs through real RecurrentGroupService servers on loopback
// ports chosen by the kernel: one LSTM group against the in-process trainer,
// a stacked two-group RNN, locked and decoupled, and malformed requests.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/recurrent_trainer.h"
#include "common/sequence_tasks.h"
#include "common/tensor_proto.h"
#include "google/protobuf/text_format.h"
#include "gtest/gtest.h"
#include "services/coordinator/recurrent_job.h"
#include "services/layer/recurrent_group.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

constexpr int kBits = 4;
constexpr int kUnits = 16;

class RecurrentServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    for (int i = 0; i < 2; ++i) {
      services_.push_back(std::make_unique<RecurrentGroupServiceImpl>());
      int port = 0;
      auto server = StartServer("127.0.0.1", 0, {services_.back().get()}, &port);
      ASSERT_TRUE(server.ok()) << server.status();
      servers_.push_back(*std::move(server));
      addresses_.push_back(absl::StrCat("127.0.0.1:", port));
    }
  }

  void TearDown() override {
    const auto deadline =
        std::chrono::system_clock::now() + std::chrono::seconds(1);
    for (auto& server : servers_) server->Shutdown(deadline);
    services_.clear();
  }

  // configs/rnn_copy_stacked.textproto on this fixture's servers, cut to
  // its top `groups` groups' shape: with one group, the top group reads the
  // task's input.
  v1::RecurrentJobSpec Spec(int groups, v1::RecurrentMode mode,
                            bool dni_between_groups) const {
    std::ifstream file(std::string(SYNTHGRAD_SOURCE_DIR) +
                       "/configs/rnn_copy_stacked.textproto");
    std::stringstream text;
    text << file.rdbuf();
    v1::RecurrentJobSpec spec;
    EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text.str(), &spec));
    EXPECT_EQ(spec.groups_size(), 2);
    spec.set_mode(mode);
    spec.set_dni_between_groups(dni_between_groups);
    if (groups == 1) {
      spec.mutable_groups()->DeleteSubrange(0, 1);
      spec.mutable_groups(0)->set_input_dim(kBits + 1);
    }
    for (int i = 0; i < groups; ++i) {
      spec.mutable_groups(i)->set_address(addresses_[i]);
    }
    return spec;
  }

  static RecurrentCopyOptions CopyOptions(int batches) {
    RecurrentCopyOptions options;
    options.batch = 8;
    options.bits = kBits;
    options.batches = batches;
    options.seed = 9;
    return options;
  }

  std::vector<std::unique_ptr<RecurrentGroupServiceImpl>> services_;
  std::vector<std::unique_ptr<grpc::Server>> servers_;
  std::vector<std::string> addresses_;
};

TEST_F(RecurrentServicesTest, OneGroupMatchesInProcessTrainer) {
  for (v1::RecurrentMode mode :
       {v1::RECURRENT_MODE_BPTT, v1::RECURRENT_MODE_DNI}) {
    const v1::RecurrentJobSpec spec = Spec(1, mode, false);
    absl::StatusOr<std::unique_ptr<RecurrentJob>> job = RecurrentJob::Start(spec);
    ASSERT_TRUE(job.ok()) << job.status();
    const RecurrentCopyOptions options = CopyOptions(30);
    absl::StatusOr<RecurrentJobSummary> summary = (*job)->RunCopy(options);
    ASSERT_TRUE(summary.ok()) << summary.status();

    // The same job in one process: same seeds, data and curriculum.
    RecurrentCoreOptions core;
    core.input_dim = kBits + 1;
    core.units = kUnits;
    core.output_dim = kBits;
    core.seed = spec.seed();
    RecurrentTrainerOptions trainer_options;
    trainer_options.mode = mode == v1::RECURRENT_MODE_BPTT ? RecurrentMode::kBptt
                                                           : RecurrentMode::kDni;
    trainer_options.learning_rate = spec.learning_rate();
    trainer_options.sg_learning_rate = spec.sg_learning_rate();
    trainer_options.gradient_clip_norm = spec.gradient_clip_norm();
    absl::StatusOr<std::unique_ptr<RecurrentTrainer>> trainer =
        RecurrentTrainer::Create(core, trainer_options);
    ASSERT_TRUE(trainer.ok()) << trainer.status();
    std::mt19937_64 rng(options.seed);
    LengthCurriculum curriculum(options.threshold, options.window);
    for (int b = 0; b < options.batches; ++b) {
      const SequenceBatch sequences =
          MakeCopyBatch(options.batch, curriculum.length(), kBits, rng);
      (*trainer)->StartSequences(options.batch);
      double loss = 0.0;
      int64_t errors = 0, scored = 0;
      for (int begin = 0; begin < sequences.steps(); begin += 3) {
        const ChunkTrainResult result = (*trainer)->TrainChunk(
            ChunkOf(sequences, begin, 3), begin + 3 >= sequences.steps());
        loss += result.score.loss;
        errors += result.score.errors;
        scored += result.score.scored_steps * kBits;
      }
      curriculum.Record(static_cast<double>(errors) / options.batch);
      ASSERT_NEAR(summary->loss_per_bit[b], loss / static_cast<double>(scored),
                  1e-6)
          << v1::RecurrentMode_Name(mode) << " batch " << b;
    }
    EXPECT_EQ(summary->solved_length, curriculum.solved_length());
  }
}

TEST_F(RecurrentServicesTest, StackedGroupsLearnCopy) {
  for (bool decoupled : {false, true}) {
    const v1::RecurrentJobSpec spec =
        Spec(2, v1::RECURRENT_MODE_DNI, decoupled);
    absl::StatusOr<std::unique_ptr<RecurrentJob>> job = RecurrentJob::Start(spec);
    ASSERT_TRUE(job.ok()) << job.status();
    absl::StatusOr<RecurrentJobSummary> summary =
        (*job)->RunCopy(CopyOptions(600));
    ASSERT_TRUE(summary.ok()) << summary.status();
    // Solving a length needs a mean error below 0.15 bits per sequence over
    // 20 batches, where an untrained model gets about half of the 4 bits of
    // length 1 wrong.
    EXPECT_GE(summary->solved_length, 1) << (decoupled ? "decoupled" : "locked");
    std::printf("%s: solved length %d\n", decoupled ? "decoupled" : "locked",
                summary->solved_length);
    if (decoupled) {
      EXPECT_GT(summary->between_sg_loss, 0.0);
    } else {
      EXPECT_EQ(summary->between_sg_loss, 0.0);
    }
  }
}

TEST_F(RecurrentServicesTest, MalformedRequestsAreRejected) {
  auto stub = v1::RecurrentGroupService::NewStub(MakeChannel(addresses_[0]));
  auto train = [&](const v1::RecurrentChunkRequest& request) {
    v1::RecurrentChunkResponse response;
    grpc::ClientContext context;
    return stub->TrainChunk(&context, request, &response).error_code();
  };

  v1::RecurrentChunkRequest chunk;
  chunk.set_sequence_start(true);
  MatrixToProto(Matrix::Zero(2, kBits + 1), chunk.add_inputs());
  MatrixToProto(Matrix::Zero(2, kBits), chunk.add_target_bits());
  EXPECT_EQ(train(chunk), grpc::StatusCode::FAILED_PRECONDITION)
      << "before Configure";

  v1::ConfigureRecurrentRequest configure;
  *configure.mutable_spec() = Spec(1, v1::RECURRENT_MODE_DNI, false);
  configure.mutable_spec()->add_groups();
  configure.mutable_spec()->add_groups();
  v1::ConfigureRecurrentResponse configured;
  {
    grpc::ClientContext context;
    EXPECT_EQ(stub->Configure(&context, configure, &configured).error_code(),
              grpc::StatusCode::INVALID_ARGUMENT)
        << "three groups";
  }
  *configure.mutable_spec() = Spec(1, v1::RECURRENT_MODE_DNI, false);
  {
    grpc::ClientContext context;
    ASSERT_TRUE(stub->Configure(&context, configure, &configured).ok());
  }

  v1::RecurrentChunkRequest wrong_id = chunk;
  wrong_id.set_chunk_id(4);
  EXPECT_EQ(train(wrong_id), grpc::StatusCode::FAILED_PRECONDITION);
  v1::RecurrentChunkRequest wrong_width = chunk;
  MatrixToProto(Matrix::Zero(2, kBits + 3), wrong_width.mutable_inputs(0));
  EXPECT_EQ(train(wrong_width), grpc::StatusCode::INVALID_ARGUMENT);
  v1::RecurrentChunkRequest missing_targets = chunk;
  missing_targets.clear_target_bits();
  EXPECT_EQ(train(missing_targets), grpc::StatusCode::INVALID_ARGUMENT);
  v1::RecurrentChunkRequest no_steps = chunk;
  no_steps.clear_inputs();
  EXPECT_EQ(train(no_steps), grpc::StatusCode::INVALID_ARGUMENT);
  // A valid chunk still trains after the rejections.
  EXPECT_EQ(train(chunk), grpc::StatusCode::OK);

  v1::RecurrentGradientRequest gradient;
  v1::RecurrentGradientResponse reply;
  grpc::ClientContext context;
  EXPECT_EQ(stub->Gradient(&context, gradient, &reply).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION)
      << "Gradient to the top group";
}

}  // namespace
}  // namespace synthgrad
