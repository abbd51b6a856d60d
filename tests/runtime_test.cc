// Tensor conversion, data loading, job specs, the group's input checks and
// update rules, and the in-process trainer.
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/dataset.h"
#include "common/group.h"
#include "common/in_process_trainer.h"
#include "common/job_spec.h"
#include "common/tensor_proto.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace synthgrad {
namespace {

using ::testing::HasSubstr;

std::string ReadFile(const std::string& path) {
  std::ifstream file(path);
  std::stringstream text;
  text << file.rdbuf();
  return text.str();
}

v1::JobSpec DefaultSpec() {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(
      ReadFile(std::string(SYNTHGRAD_SOURCE_DIR) +
               "/configs/fashion_mnist_dni.textproto"));
  EXPECT_TRUE(spec.ok()) << spec.status();
  ApplyJobDefaults(&*spec);
  return *spec;
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
    synthetic_gradient { optimizer { kind: KIND_ADAM learning_rate: 0.01 } }
  )pb");
  EXPECT_TRUE(spec.ok()) << spec.status();
  spec->set_mode(mode);
  ApplyJobDefaults(&*spec);
  return *spec;
}

// ---------------------------------------------------------------------------
// Tensor conversion.

v1::Tensor MakeTensor(std::vector<int64_t> shape, std::vector<float> data) {
  v1::Tensor tensor;
  for (int64_t d : shape) tensor.add_shape(d);
  for (float v : data) tensor.add_data(v);
  return tensor;
}

TEST(TensorProto, RoundTripKeepsRowMajorOrder) {
  Matrix m(2, 3);
  m << 1, 2, 3, 4, 5, 6;
  v1::Tensor tensor;
  MatrixToProto(m, &tensor);
  EXPECT_EQ(tensor.data(1), 2.0f);
  EXPECT_EQ(tensor.data(3), 4.0f);
  absl::StatusOr<Matrix> back = MatrixFromProto(tensor, {}, "t");
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, m);
}

TEST(TensorProto, RejectsInvalidTensorsNamingTheValue) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  struct Case {
    const char* name;
    v1::Tensor tensor;
    TensorLimits limits;
    const char* message;
  };
  TensorLimits three_cols;
  three_cols.cols = 3;
  TensorLimits two_rows_max;
  two_rows_max.max_rows = 2;
  const std::vector<Case> cases = {
      {"rank 1", MakeTensor({3}, {1, 2, 3}), {}, "rank 2"},
      {"rank 3", MakeTensor({1, 1, 1}, {1}), {}, "[1, 1, 1]"},
      {"zero rows", MakeTensor({0, 3}, {}), {}, "non-positive"},
      {"negative cols", MakeTensor({1, -3}, {}), {}, "[1, -3]"},
      {"wrong cols", MakeTensor({1, 2}, {1, 2}), three_cols, "expected 3"},
      {"too many rows", MakeTensor({3, 1}, {1, 2, 3}), two_rows_max, "limit of 2"},
      {"short data", MakeTensor({2, 3}, {1, 2, 3}), {}, "got 3"},
      {"overflowing shape", MakeTensor({int64_t{1} << 40, int64_t{1} << 40}, {1}),
       {}, "1099511627776"},
      {"nan", MakeTensor({1, 3}, {1, nan, 3}), {}, "column 1"},
      {"inf", MakeTensor({2, 1}, {1, -inf}), {}, "row 1"},
  };
  for (const Case& c : cases) {
    absl::StatusOr<Matrix> m = MatrixFromProto(c.tensor, c.limits, "activations");
    ASSERT_FALSE(m.ok()) << c.name;
    EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr(c.message)) << c.name;
    EXPECT_THAT(std::string(m.status().message()), HasSubstr("activations"))
        << c.name;
  }
}

// ---------------------------------------------------------------------------
// Data loading.

class DatasetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = ::testing::TempDir() + "/synthgrad_dataset_test";
    std::system(("mkdir -p " + dir_).c_str());
  }

  // Writes `bytes` gzip-compressed to dir_/name and returns the path.
  std::string WriteGz(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = dir_ + "/" + name;
    gzFile file = gzopen(path.c_str(), "wb");
    gzwrite(file, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(file);
    return path;
  }

  static void Append32(std::vector<uint8_t>* out, uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) out->push_back((v >> shift) & 0xff);
  }

  // An IDX image file of `count` 2x2 images whose pixels all equal the index.
  static std::vector<uint8_t> Images(uint32_t count, uint32_t magic = 0x803) {
    std::vector<uint8_t> bytes;
    Append32(&bytes, magic);
    Append32(&bytes, count);
    Append32(&bytes, 2);
    Append32(&bytes, 2);
    for (uint32_t i = 0; i < count; ++i) bytes.insert(bytes.end(), 4, i);
    return bytes;
  }

  static std::vector<uint8_t> Labels(std::vector<uint8_t> labels) {
    std::vector<uint8_t> bytes;
    Append32(&bytes, 0x801);
    Append32(&bytes, static_cast<uint32_t>(labels.size()));
    bytes.insert(bytes.end(), labels.begin(), labels.end());
    return bytes;
  }

  std::string dir_;
};

TEST_F(DatasetTest, LoadsImagesAndLabels) {
  const std::string images = WriteGz("i.gz", Images(3));
  const std::string labels = WriteGz("l.gz", Labels({7, 0, 9}));
  absl::StatusOr<Dataset> data = LoadIdx(images, labels, 0);
  ASSERT_TRUE(data.ok()) << data.status();
  EXPECT_EQ(data->size(), 3);
  EXPECT_EQ(data->input_dim(), 4);
  EXPECT_EQ(data->labels, (std::vector<int32_t>{7, 0, 9}));

  Matrix x;
  std::vector<int32_t> y;
  GatherBatch(*data, std::vector<int64_t>{2, 1}, &x, &y);
  EXPECT_FLOAT_EQ(x(0, 0), 2.0f / 255.0f);
  EXPECT_FLOAT_EQ(x(1, 3), 1.0f / 255.0f);
  EXPECT_EQ(y, (std::vector<int32_t>{9, 0}));
}

TEST_F(DatasetTest, LimitKeepsFirstExamples) {
  absl::StatusOr<Dataset> data =
      LoadIdx(WriteGz("i.gz", Images(5)), WriteGz("l.gz", Labels({1, 2, 3, 4, 5})), 2);
  ASSERT_TRUE(data.ok());
  EXPECT_EQ(data->size(), 2);
}

TEST_F(DatasetTest, MissingFileIsNotFoundNamingPath) {
  absl::StatusOr<Dataset> data =
      LoadIdx(dir_ + "/absent.gz", WriteGz("l.gz", Labels({1})), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("absent.gz"));
}

TEST_F(DatasetTest, WrongMagicIsDataLoss) {
  absl::StatusOr<Dataset> data = LoadIdx(WriteGz("i.gz", Images(1, 0x801)),
                                         WriteGz("l.gz", Labels({1})), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("i.gz"));
}

TEST_F(DatasetTest, TruncatedFileIsDataLoss) {
  std::vector<uint8_t> images = Images(4);
  images.resize(images.size() - 3);
  absl::StatusOr<Dataset> data =
      LoadIdx(WriteGz("i.gz", images), WriteGz("l.gz", Labels({1, 2, 3, 4})), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("truncated"));
}

TEST_F(DatasetTest, HugeDeclaredShapeIsDataLoss) {
  std::vector<uint8_t> images;
  Append32(&images, 0x803);
  Append32(&images, 3'000'000);
  Append32(&images, 28);
  Append32(&images, 28);
  std::vector<uint8_t> labels;
  Append32(&labels, 0x801);
  Append32(&labels, 3'000'000);
  absl::StatusOr<Dataset> data =
      LoadIdx(WriteGz("i.gz", images), WriteGz("l.gz", labels), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("implausible"));
}

TEST_F(DatasetTest, CountMismatchIsInvalidArgument) {
  absl::StatusOr<Dataset> data =
      LoadIdx(WriteGz("i.gz", Images(2)), WriteGz("l.gz", Labels({1, 2, 3})), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(DatasetTest, OutOfRangeLabelIsDataLoss) {
  absl::StatusOr<Dataset> data =
      LoadIdx(WriteGz("i.gz", Images(2)), WriteGz("l.gz", Labels({1, 12})), 0);
  ASSERT_FALSE(data.ok());
  EXPECT_EQ(data.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(data.status().message()), HasSubstr("label 12"));
}

TEST(EpochOrder, IsSeededPermutationThatChangesPerEpoch) {
  const std::vector<int64_t> a = EpochOrder(100, 1, 1);
  EXPECT_EQ(a, EpochOrder(100, 1, 1));
  EXPECT_NE(a, EpochOrder(100, 1, 2));
  EXPECT_NE(a, EpochOrder(100, 2, 1));
  EXPECT_EQ(std::set<int64_t>(a.begin(), a.end()).size(), 100u);
}

// ---------------------------------------------------------------------------
// Job specs.

TEST(JobSpec, DefaultConfigIsValid) {
  const v1::JobSpec spec = DefaultSpec();
  EXPECT_TRUE(ValidateJobSpec(spec).ok()) << ValidateJobSpec(spec);
  EXPECT_EQ(spec.groups_size(), 3);
  EXPECT_EQ(GroupInputDim(spec, 0), 784);
  EXPECT_EQ(GroupInputDim(spec, 2), 256);
  EXPECT_EQ(GroupOutputDim(spec, 2), 10);
}

TEST(JobSpec, BackpropForcesOneBatchInFlight) {
  v1::JobSpec spec = TinySpec(v1::TRAINING_MODE_BACKPROP);
  spec.set_max_in_flight(8);
  ApplyJobDefaults(&spec);
  EXPECT_EQ(spec.max_in_flight(), 1);
}

TEST(JobSpec, RejectsInvalidSpecsNamingTheField) {
  struct Case {
    const char* name;
    std::function<void(v1::JobSpec*)> mutate;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"no mode", [](v1::JobSpec* s) { s->set_mode(v1::TRAINING_MODE_UNSPECIFIED); },
       "mode"},
      {"no groups", [](v1::JobSpec* s) { s->clear_groups(); }, "groups"},
      {"empty address",
       [](v1::JobSpec* s) { s->mutable_groups(1)->clear_address(); },
       "groups[1].address"},
      {"classes mismatch", [](v1::JobSpec* s) { s->set_num_classes(7); },
       "num_classes is 7"},
      {"zero batch", [](v1::JobSpec* s) { s->set_batch_size(0); }, "batch_size"},
      {"huge batch", [](v1::JobSpec* s) { s->set_batch_size(1 << 20); },
       "batch_size"},
      {"negative epochs", [](v1::JobSpec* s) { s->set_epochs(-1); }, "epochs"},
      {"bad layer",
       [](v1::JobSpec* s) { s->mutable_groups(0)->mutable_layers(0)->set_units(-2); },
       "groups[0]"},
      {"no optimizer", [](v1::JobSpec* s) { s->clear_optimizer(); }, "optimizer"},
      {"no sg optimizer",
       [](v1::JobSpec* s) { s->mutable_synthetic_gradient()->clear_optimizer(); },
       "synthetic_gradient.optimizer"},
      {"huge layer",
       [](v1::JobSpec* s) {
         s->mutable_groups(1)->mutable_layers(0)->set_units(1000000000);
       },
       "groups[1].layers[0].units"},
      {"too many parameters",
       [](v1::JobSpec* s) {
         s->set_input_dim(60000);
         s->mutable_groups(0)->mutable_layers(0)->set_units(60000);
         s->mutable_groups(1)->mutable_layers(0)->set_units(4);
       },
       "above the limit"},
      {"huge synthetic-gradient model",
       [](v1::JobSpec* s) {
         s->mutable_synthetic_gradient()->add_hidden_units(1 << 20);
       },
       "synthetic_gradient of groups[0]"},
      {"unknown layer kind",
       [](v1::JobSpec* s) {
         s->mutable_groups(2)->mutable_layers(0)->set_kind(
             static_cast<v1::LayerSpec::Kind>(42));
       },
       "groups[2].layers[0].kind"},
      {"huge cache", [](v1::JobSpec* s) { s->set_cache_capacity(1 << 20); },
       "cache_capacity"},
      {"wide activations",
       [](v1::JobSpec* s) {
         s->set_input_dim(1);
         s->mutable_groups(0)->mutable_layers(0)->set_units(60000);
         s->mutable_groups(1)->mutable_layers(0)->set_units(4);
         s->set_batch_size(8192);
       },
       "activations per batch"},
      {"shared address",
       [](v1::JobSpec* s) { s->mutable_groups(2)->set_address("a"); },
       "groups[2].address a is also used"},
      {"message too large",
       [](v1::JobSpec* s) {
         s->set_input_dim(4000);
         s->set_batch_size(8192);
       },
       "message limit"},
      {"window above cache",
       [](v1::JobSpec* s) {
         s->set_max_in_flight(10);
         s->set_cache_capacity(19);
       },
       "cache_capacity"},
  };
  for (const Case& c : cases) {
    v1::JobSpec spec = TinySpec(v1::TRAINING_MODE_DNI);
    c.mutate(&spec);
    const absl::Status status = ValidateJobSpec(spec);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_THAT(std::string(status.message()), HasSubstr(c.message)) << c.name;
  }
}

TEST(JobSpec, ParseErrorNamesTheLine) {
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec("name: \"x\"\nbatch_size: oops\n");
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(spec.status().message()), HasSubstr("line 2"));
}

// ---------------------------------------------------------------------------
// Group input checks, through the in-process trainer's groups.

ForwardMessage Batch(int64_t id, int rows, int cols, std::vector<int32_t> labels) {
  ForwardMessage message;
  message.batch_id = id;
  message.activations = Matrix::Constant(rows, cols, 0.5f);
  message.labels = std::move(labels);
  return message;
}

TEST(Group, AcceptForwardRejectsBadBatches) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_DNI));
  ASSERT_TRUE(trainer.ok()) << trainer.status();
  Group& group = (*trainer)->group(0);

  absl::Status status = group.AcceptForward(Batch(1, 2, 5, {0, 1}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("5 columns"));

  status = group.AcceptForward(Batch(2, 2, 6, {0}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("1 labels for 2 rows"));

  status = group.AcceptForward(Batch(3, 2, 6, {0, 3}));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("label 3"));

  ForwardMessage nan = Batch(4, 1, 6, {0});
  nan.activations(0, 2) = std::nanf("");
  status = group.AcceptForward(nan);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("NaN"));

  EXPECT_TRUE(group.AcceptForward(Batch(5, 1, 6, {0})).ok());
  status = group.AcceptForward(Batch(5, 1, 6, {0}));
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);

  EXPECT_EQ(group.stats().rejected_requests, 5);
}

TEST(Group, AcceptGradientRejectsUnknownAndMisshapen) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_DNI));
  ASSERT_TRUE(trainer.ok());
  Group& group = (*trainer)->group(1);

  absl::Status status = group.AcceptGradient({77, Matrix::Zero(2, 4)});
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), HasSubstr("batch 77"));

  // Group 1 awaits a gradient for batch 9 once it has sent it forward; send
  // it through group 1 alone by handling it directly.
  ASSERT_TRUE(group.AcceptForward(Batch(9, 2, 5, {0, 1})).ok());
  group.HandleForward(Batch(9, 2, 5, {0, 1}));
  status = group.AcceptGradient({9, Matrix::Zero(3, 4)});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("[2, 4]"));
  EXPECT_TRUE(group.AcceptGradient({9, Matrix::Zero(2, 4)}).ok());
  EXPECT_EQ(group.AcceptGradient({9, Matrix::Zero(2, 4)}).code(),
            absl::StatusCode::kNotFound);
}

// ---------------------------------------------------------------------------
// Update rules.

Matrix Inputs(int rows, int cols, float offset) {
  Matrix x(rows, cols);
  for (Eigen::Index i = 0; i < x.size(); ++i) {
    x.data()[i] = std::sin(static_cast<float>(i) + offset);
  }
  return x;
}

TEST(InProcessTrainer, DniFirstUpdateUsesZeroSyntheticGradient) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_DNI));
  ASSERT_TRUE(trainer.ok());
  std::vector<std::vector<Matrix>> before;
  for (int g = 0; g < 3; ++g) before.push_back((*trainer)->group(g).parameters());

  ASSERT_TRUE((*trainer)->Train(1, Inputs(4, 6, 0), {0, 1, 2, 0}).ok());

  // M_0 and M_1 predict exactly zero, so Adam's first step on groups 0 and 1
  // is zero; the last group learns from the true gradient.
  EXPECT_EQ((*trainer)->group(0).parameters(), before[0]);
  EXPECT_EQ((*trainer)->group(1).parameters(), before[1]);
  EXPECT_NE((*trainer)->group(2).parameters(), before[2]);
  // The true gradient has since trained M_1, so the next batch moves group 1.
  ASSERT_TRUE((*trainer)->Train(2, Inputs(4, 6, 1), {2, 1, 0, 1}).ok());
  EXPECT_NE((*trainer)->group(1).parameters(), before[1]);
}

TEST(InProcessTrainer, DniRecordsSyntheticGradientQuality) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_CDNI));
  ASSERT_TRUE(trainer.ok());
  for (int b = 1; b <= 20; ++b) {
    ASSERT_TRUE((*trainer)->Train(b, Inputs(4, 6, b), {0, 1, 2, b % 3}).ok());
  }
  const GroupStats stats = (*trainer)->group(1).stats();
  EXPECT_EQ(stats.step, 20);
  EXPECT_EQ(stats.gradient_batches, 20);
  EXPECT_TRUE(std::isfinite(stats.synthetic_gradient_loss));
  EXPECT_GE(stats.synthetic_gradient_cosine, -1.0);
  EXPECT_LE(stats.synthetic_gradient_cosine, 1.0);
  // In process, every gradient arrives right after the group's own update.
  EXPECT_EQ(stats.staleness_steps_max, 1);
  EXPECT_EQ(stats.StalenessQuantile(0.5), 1);
  EXPECT_EQ(stats.StalenessQuantile(0.99), 1);
}

TEST(InProcessTrainer, ProbeComparesWithoutUpdating) {
  auto trainer = InProcessTrainer::Create(TinySpec(v1::TRAINING_MODE_DNI));
  ASSERT_TRUE(trainer.ok());
  for (int b = 1; b <= 10; ++b) {
    ASSERT_TRUE((*trainer)->Train(b, Inputs(4, 6, b), {0, 1, 2, b % 3}).ok());
  }
  std::vector<std::vector<Matrix>> before;
  for (int g = 0; g < 3; ++g) before.push_back((*trainer)->group(g).parameters());
  const GroupStats stats_before = (*trainer)->group(1).stats();

  ASSERT_TRUE((*trainer)->Probe(11, Inputs(4, 6, 11), {2, 2, 1, 0}).ok());

  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ((*trainer)->group(g).parameters(), before[g]) << "group " << g;
  }
  for (int g = 0; g < 2; ++g) {
    const GroupStats stats = (*trainer)->group(g).stats();
    EXPECT_EQ(stats.probes, 1) << "group " << g;
    EXPECT_GE(stats.probe_cosine, -1.0) << "group " << g;
    EXPECT_LE(stats.probe_cosine, 1.0) << "group " << g;
    EXPECT_TRUE(std::isfinite(stats.probe_relative_error)) << "group " << g;
  }
  const GroupStats stats_after = (*trainer)->group(1).stats();
  EXPECT_EQ(stats_after.step, stats_before.step);
  EXPECT_EQ(stats_after.forward_samples, stats_before.forward_samples);
  EXPECT_EQ(stats_after.gradient_batches, stats_before.gradient_batches);
}

TEST(GroupStats, StalenessQuantiles) {
  GroupStats stats;
  EXPECT_EQ(stats.StalenessQuantile(0.5), 0);
  stats.staleness_counts[1] = 50;
  stats.staleness_counts[3] = 49;
  stats.staleness_counts[kMaxCountedStaleness] = 1;
  stats.staleness_count = 100;
  EXPECT_EQ(stats.StalenessQuantile(0.5), 1);
  EXPECT_EQ(stats.StalenessQuantile(0.51), 3);
  EXPECT_EQ(stats.StalenessQuantile(0.99), 3);
  EXPECT_EQ(stats.StalenessQuantile(1.0), kMaxCountedStaleness);
}

TEST(InProcessTrainer, BackpropLearnsASeparableProblem) {
  v1::JobSpec spec = TinySpec(v1::TRAINING_MODE_BACKPROP);
  spec.set_batch_size(16);
  auto trainer = InProcessTrainer::Create(spec);
  ASSERT_TRUE(trainer.ok());
  // The class is the index of the largest of the first three inputs.
  auto make = [](int seed, Matrix* x, std::vector<int32_t>* y) {
    *x = Inputs(16, 6, static_cast<float>(seed) * 0.37f);
    y->clear();
    for (int r = 0; r < 16; ++r) {
      Eigen::Index best = 0;
      x->row(r).head(3).maxCoeff(&best);
      y->push_back(static_cast<int32_t>(best));
    }
  };
  Matrix x;
  std::vector<int32_t> y;
  for (int b = 1; b <= 400; ++b) {
    make(b, &x, &y);
    ASSERT_TRUE((*trainer)->Train(b, x, y).ok());
  }
  make(1000, &x, &y);
  absl::StatusOr<BatchReport> report = (*trainer)->Evaluate(1000, x, y);
  ASSERT_TRUE(report.ok());
  EXPECT_GE(report->correct, 14) << "loss " << report->mean_loss;
}

}  // namespace
}  // namespace synthgrad
