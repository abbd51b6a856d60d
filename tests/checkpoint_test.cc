// Checkpoint files, optimizer and group state round trips, and the
// checkpoint folder layout.
#include <limits.h>
#include <stdlib.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "common/checkpoint.h"
#include "common/in_process_trainer.h"
#include "common/job_spec.h"
#include "common/optimizer.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/gradient_check.h"

namespace synthgrad {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

// Returns a new folder under the test's temporary folder, resolved to an
// absolute path without symbolic links.
std::string MakeTempFolder() {
  std::string pattern = ::testing::TempDir() + "/synthgrad-checkpoint-XXXXXX";
  char* folder = ::mkdtemp(pattern.data());
  EXPECT_NE(folder, nullptr);
  char resolved[PATH_MAX];
  EXPECT_NE(::realpath(pattern.c_str(), resolved), nullptr);
  return resolved;
}

std::string ReadBytes(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(file), {});
}

void WriteBytes(const std::string& path, const std::string& bytes) {
  std::ofstream file(path, std::ios::binary | std::ios::trunc);
  file << bytes;
}

using testing_util::RandomMatrix;

v1::GroupCheckpoint SampleCheckpoint() {
  v1::GroupCheckpoint checkpoint;
  checkpoint.set_group_index(2);
  checkpoint.set_checkpoint_id(7);
  checkpoint.set_step(1234);
  for (int i = 0; i < 100; ++i) checkpoint.add_parameters()->add_data(0.5f * i);
  return checkpoint;
}

// A three-group spec small enough for unit tests: 6 -> 5 -> 4 -> 3 classes.
v1::JobSpec TinySpec(v1::TrainingMode mode) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(R"pb(
    mode: TRAINING_MODE_DNI
    input_dim: 6
    num_classes: 3
    batch_size: 4
    epochs: 1
    seed: 5
    groups {
      address: "a"
      layers { kind: KIND_LINEAR units: 5 }
      layers { kind: KIND_LAYER_NORM }
      layers { kind: KIND_RELU }
    }
    groups {
      address: "b"
      layers { kind: KIND_LINEAR units: 4 }
      layers { kind: KIND_RELU }
    }
    groups {
      address: "c"
      layers { kind: KIND_LINEAR units: 3 }
    }
    optimizer { kind: KIND_ADAM learning_rate: 0.01 }
    synthetic_gradient {
      hidden_units: 8
      optimizer { kind: KIND_SGD learning_rate: 0.01 momentum: 0.9 }
    }
  )pb");
  EXPECT_TRUE(spec.ok()) << spec.status();
  spec->set_mode(mode);
  ApplyJobDefaults(&*spec);
  return *spec;
}

std::vector<int32_t> Labels(int rows, uint64_t seed) {
  std::vector<int32_t> labels(rows);
  for (int i = 0; i < rows; ++i) labels[i] = static_cast<int32_t>((seed + i) % 3);
  return labels;
}

// ---------------------------------------------------------------------------
// Files.

TEST(CheckpointFile, RoundTripsMessage) {
  const std::string path = MakeTempFolder() + "/a.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, SampleCheckpoint()).ok());
  v1::GroupCheckpoint read;
  ASSERT_TRUE(ReadCheckpointFile(path, &read).ok());
  EXPECT_EQ(read.SerializeAsString(), SampleCheckpoint().SerializeAsString());
}

TEST(CheckpointFile, ReplacesOldFileAndLeavesNoTemporary) {
  const std::string folder = MakeTempFolder();
  const std::string path = folder + "/a.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, SampleCheckpoint()).ok());
  v1::GroupCheckpoint second = SampleCheckpoint();
  second.set_step(99);
  ASSERT_TRUE(WriteCheckpointFile(path, second).ok());
  v1::GroupCheckpoint read;
  ASSERT_TRUE(ReadCheckpointFile(path, &read).ok());
  EXPECT_EQ(read.step(), 99);
  int files = 0;
  for (const char* name : {"a.ckpt"}) {
    files += std::ifstream(folder + "/" + name).good() ? 1 : 0;
  }
  EXPECT_EQ(files, 1);
  EXPECT_FALSE(std::ifstream(path + ".tmp-" + std::to_string(::getpid())).good());
}

TEST(CheckpointFile, MissingFileIsNotFound) {
  v1::GroupCheckpoint read;
  const absl::Status status =
      ReadCheckpointFile(MakeTempFolder() + "/none.ckpt", &read);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("none.ckpt"));
}

TEST(CheckpointFile, FlippedPayloadByteIsDataLoss) {
  const std::string path = MakeTempFolder() + "/a.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, SampleCheckpoint()).ok());
  std::string bytes = ReadBytes(path);
  bytes[bytes.size() / 2] ^= 0x10;
  WriteBytes(path, bytes);
  v1::GroupCheckpoint read;
  const absl::Status status = ReadCheckpointFile(path, &read);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("CRC-32"));
}

TEST(CheckpointFile, TruncatedFileIsDataLoss) {
  const std::string path = MakeTempFolder() + "/a.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, SampleCheckpoint()).ok());
  const std::string bytes = ReadBytes(path);
  for (size_t length : {size_t{0}, size_t{10}, bytes.size() - 1}) {
    WriteBytes(path, bytes.substr(0, length));
    v1::GroupCheckpoint read;
    const absl::Status status = ReadCheckpointFile(path, &read);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << "length " << length;
  }
}

TEST(CheckpointFile, OtherFormatVersionIsFailedPrecondition) {
  const std::string path = MakeTempFolder() + "/a.ckpt";
  ASSERT_TRUE(WriteCheckpointFile(path, SampleCheckpoint()).ok());
  std::string bytes = ReadBytes(path);
  bytes[8] = 2;  // Version field, little-endian.
  WriteBytes(path, bytes);
  v1::GroupCheckpoint read;
  const absl::Status status = ReadCheckpointFile(path, &read);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(status.message()), HasSubstr("version 2"));
}

TEST(CheckpointFile, DoesNotFollowSymbolicLink) {
  const std::string folder = MakeTempFolder();
  ASSERT_TRUE(WriteCheckpointFile(folder + "/real.ckpt", SampleCheckpoint()).ok());
  ASSERT_EQ(::symlink((folder + "/real.ckpt").c_str(),
                      (folder + "/link.ckpt").c_str()),
            0);
  v1::GroupCheckpoint read;
  EXPECT_FALSE(ReadCheckpointFile(folder + "/link.ckpt", &read).ok());
}

TEST(CheckpointDirectory, PathsStayUnderRoot) {
  const std::string root = MakeTempFolder();
  absl::StatusOr<CheckpointDirectory> directory =
      CheckpointDirectory::Open(root + "/nested/../store");
  ASSERT_TRUE(directory.ok()) << directory.status();
  EXPECT_EQ(directory->root(), root + "/store");
  // Extreme integers still give names inside the root.
  for (const std::string& path :
       {directory->GroupPath(~uint64_t{0}, ~uint64_t{0}, -1, -5),
        directory->GroupPath(0, 0, 2147483647, int64_t{1} << 62),
        directory->CoordinatorPath(0x2e2e2f2e2e2fULL)}) {
    EXPECT_THAT(path, StartsWith(root + "/store/job-"));
    EXPECT_EQ(path.find(".."), std::string::npos) << path;
  }
}

TEST(CheckpointDirectory, PruneKeepsNewestOfRun) {
  absl::StatusOr<CheckpointDirectory> directory =
      CheckpointDirectory::Open(MakeTempFolder());
  ASSERT_TRUE(directory.ok()) << directory.status();
  constexpr uint64_t kRun = 7;
  constexpr uint64_t kOtherRun = 8;
  ASSERT_TRUE(directory->CreateGroupFolder(42, kRun, 1).ok());
  ASSERT_TRUE(directory->CreateGroupFolder(42, kOtherRun, 1).ok());
  for (int64_t id : {3, 10, 4, 12, 11}) {
    ASSERT_TRUE(WriteCheckpointFile(directory->GroupPath(42, kRun, 1, id),
                                    SampleCheckpoint())
                    .ok());
  }
  // A later run of the same spec starts its ids from 1 again.
  ASSERT_TRUE(WriteCheckpointFile(directory->GroupPath(42, kOtherRun, 1, 1),
                                  SampleCheckpoint())
                  .ok());

  EXPECT_EQ(directory->PruneGroupCheckpoints(42, kRun, 1, 3), 2);
  for (int64_t id : {3, 4}) {
    EXPECT_FALSE(std::ifstream(directory->GroupPath(42, kRun, 1, id)).good()) << id;
  }
  for (int64_t id : {10, 11, 12}) {
    EXPECT_TRUE(std::ifstream(directory->GroupPath(42, kRun, 1, id)).good()) << id;
  }
  EXPECT_EQ(directory->PruneGroupCheckpoints(42, kOtherRun, 1, 3), 0);
  EXPECT_TRUE(std::ifstream(directory->GroupPath(42, kOtherRun, 1, 1)).good());
}

TEST(SpecFingerprint, IgnoresAddressesButNotModel) {
  const v1::JobSpec spec = TinySpec(v1::TRAINING_MODE_DNI);
  v1::JobSpec moved = spec;
  moved.mutable_groups(1)->set_address("dns:///elsewhere:1");
  moved.mutable_data()->set_dir("/mnt/data");
  EXPECT_EQ(SpecFingerprint(moved), SpecFingerprint(spec));

  v1::JobSpec wider = spec;
  wider.mutable_groups(0)->mutable_layers(0)->set_units(6);
  EXPECT_NE(SpecFingerprint(wider), SpecFingerprint(spec));
  v1::JobSpec reseeded = spec;
  reseeded.set_seed(6);
  EXPECT_NE(SpecFingerprint(reseeded), SpecFingerprint(spec));
}

// ---------------------------------------------------------------------------
// Optimizer and group state.

// Steps `a` three times, copies its state into a fresh `b`, then checks that
// one more identical step leaves both with identical parameters.
void ExpectRestoredOptimizerContinuesIdentically(const v1::OptimizerSpec& spec) {
  auto a = Optimizer::Create(spec);
  auto b = Optimizer::Create(spec);
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(b.ok());
  std::vector<Matrix> params_a = {RandomMatrix(3, 4, 1), RandomMatrix(1, 4, 2)};
  for (int step = 0; step < 3; ++step) {
    (*a)->Step(params_a, {RandomMatrix(3, 4, 10 + step), RandomMatrix(1, 4, 20 + step)},
               0.5f);
  }
  v1::OptimizerState state;
  (*a)->SaveState(&state);
  EXPECT_EQ(state.step(), 3);
  std::vector<Matrix> params_b = params_a;
  ASSERT_TRUE((*b)->RestoreState(state, params_b).ok());

  const std::vector<Matrix> gradients = {RandomMatrix(3, 4, 30), RandomMatrix(1, 4, 31)};
  (*a)->Step(params_a, gradients, 0.5f);
  (*b)->Step(params_b, gradients, 0.5f);
  for (size_t i = 0; i < params_a.size(); ++i) {
    EXPECT_EQ(params_a[i], params_b[i]) << "parameter " << i;
  }
}

TEST(OptimizerState, AdamRestoreContinuesIdentically) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.set_learning_rate(0.01f);
  spec.set_learning_rate_half_life_steps(2);
  ExpectRestoredOptimizerContinuesIdentically(spec);
}

TEST(OptimizerState, SgdRestoreContinuesIdentically) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_SGD);
  spec.set_learning_rate(0.1f);
  spec.set_momentum(0.9f);
  ExpectRestoredOptimizerContinuesIdentically(spec);
}

TEST(OptimizerState, RejectsMismatchedSlots) {
  v1::OptimizerSpec spec;
  spec.set_kind(v1::OptimizerSpec::KIND_ADAM);
  spec.set_learning_rate(0.01f);
  auto optimizer = Optimizer::Create(spec);
  ASSERT_TRUE(optimizer.ok());
  std::vector<Matrix> params = {RandomMatrix(3, 4, 1)};
  (*optimizer)->Step(params, {RandomMatrix(3, 4, 2)}, 1.0f);
  v1::OptimizerState state;
  (*optimizer)->SaveState(&state);

  const std::vector<Matrix> other_shape = {RandomMatrix(4, 3, 1)};
  absl::Status status = (*optimizer)->RestoreState(state, other_shape);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  v1::OptimizerState missing_second = state;
  missing_second.clear_second_slots();
  status = (*optimizer)->RestoreState(missing_second, params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  v1::OptimizerState nan = state;
  nan.mutable_first_slots(0)->set_data(0, std::nanf(""));
  status = (*optimizer)->RestoreState(nan, params);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("non-finite"));
}

// Trains `batches` batches on the tiny spec with deterministic data.
void TrainTiny(InProcessTrainer& trainer, int first_batch, int batches) {
  for (int b = first_batch; b < first_batch + batches; ++b) {
    ASSERT_TRUE(trainer.Train(b + 1, RandomMatrix(4, 6, 100 + b), Labels(4, b)).ok());
  }
}

TEST(GroupCheckpoint, RestoredTrainerContinuesIdentically) {
  for (v1::TrainingMode mode :
       {v1::TRAINING_MODE_BACKPROP, v1::TRAINING_MODE_DNI, v1::TRAINING_MODE_CDNI}) {
    SCOPED_TRACE(v1::TrainingMode_Name(mode));
    auto original = InProcessTrainer::Create(TinySpec(mode));
    auto restored = InProcessTrainer::Create(TinySpec(mode));
    ASSERT_TRUE(original.ok());
    ASSERT_TRUE(restored.ok());
    TrainTiny(**original, 0, 5);

    for (int i = 0; i < 3; ++i) {
      v1::GroupCheckpoint checkpoint;
      (*original)->group(i).SaveCheckpoint(&checkpoint);
      // Through the file format, as a restart would.
      const std::string path = MakeTempFolder() + "/g.ckpt";
      ASSERT_TRUE(WriteCheckpointFile(path, checkpoint).ok());
      v1::GroupCheckpoint read;
      ASSERT_TRUE(ReadCheckpointFile(path, &read).ok());
      ASSERT_TRUE((*restored)->group(i).RestoreCheckpoint(read).ok());
      EXPECT_EQ((*restored)->group(i).stats().step, (*original)->group(i).stats().step);
    }

    TrainTiny(**original, 5, 3);
    TrainTiny(**restored, 5, 3);
    for (int i = 0; i < 3; ++i) {
      const std::vector<Matrix>& a = (*original)->group(i).parameters();
      const std::vector<Matrix>& b = (*restored)->group(i).parameters();
      ASSERT_EQ(a.size(), b.size());
      for (size_t p = 0; p < a.size(); ++p) {
        EXPECT_EQ(a[p], b[p]) << "group " << i << " parameter " << p;
      }
      const std::vector<Matrix> sa = (*original)->group(i).synthetic_gradient_parameters();
      const std::vector<Matrix> sb = (*restored)->group(i).synthetic_gradient_parameters();
      ASSERT_EQ(sa.size(), sb.size());
      for (size_t p = 0; p < sa.size(); ++p) {
        EXPECT_EQ(sa[p], sb[p]) << "group " << i << " synthetic-gradient parameter " << p;
      }
    }
  }
}

TEST(GroupCheckpoint, RejectsCheckpointOfAnotherGroupOrShape) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_DNI));
  ASSERT_TRUE(trainer.ok());
  v1::GroupCheckpoint checkpoint;
  (*trainer)->group(0).SaveCheckpoint(&checkpoint);

  absl::Status status = (*trainer)->group(1).RestoreCheckpoint(checkpoint);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("group 0"));

  v1::GroupCheckpoint missing = checkpoint;
  missing.mutable_parameters()->RemoveLast();
  status = (*trainer)->group(0).RestoreCheckpoint(missing);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  v1::GroupCheckpoint negative = checkpoint;
  negative.set_step(-1);
  status = (*trainer)->group(0).RestoreCheckpoint(negative);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);

  v1::GroupCheckpoint last;
  (*trainer)->group(2).SaveCheckpoint(&last);
  EXPECT_TRUE(last.synthetic_gradient_parameters().empty());
  *last.add_synthetic_gradient_parameters() = checkpoint.parameters(0);
  status = (*trainer)->group(2).RestoreCheckpoint(last);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace synthgrad
