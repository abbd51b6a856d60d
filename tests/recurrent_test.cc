// The LSTM, truncated BPTT with and without synthetic gradients, and the
// recurrent tasks' data, checked against finite differences, full
// backpropagation and hand-computed layouts.
#include <cmath>
#include <functional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "common/lstm.h"
#include "common/recurrent_trainer.h"
#include "common/sequence_tasks.h"
#include "common/tensor.h"
#include "gtest/gtest.h"
#include "tests/gradient_check.h"

namespace synthgrad {
namespace {

using testing_util::ExpectGradientMatches;
using testing_util::RandomMatrix;

void ExpectClose(const Matrix& a, const Matrix& b, const std::string& what) {
  ASSERT_EQ(a.rows(), b.rows()) << what;
  ASSERT_EQ(a.cols(), b.cols()) << what;
  for (Eigen::Index i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a.data()[i], b.data()[i], 1e-4 + 1e-4 * std::abs(b.data()[i]))
        << what << " entry " << i;
  }
}

TEST(LstmGradient, MatchesFiniteDifferences) {
  constexpr int kBatch = 2, kInputs = 3, kUnits = 4, kSteps = 4;
  absl::StatusOr<Lstm> created = Lstm::Create(kInputs, kUnits, 5);
  ASSERT_TRUE(created.ok()) << created.status();
  Lstm lstm = *std::move(created);
  std::vector<Matrix> inputs;
  std::vector<Matrix> readouts;
  for (int t = 0; t < kSteps; ++t) {
    inputs.push_back(RandomMatrix(kBatch, kInputs, 10 + t));
    readouts.push_back(RandomMatrix(kBatch, kUnits, 20 + t));
  }
  // Step 1 gets no output gradient, to check the empty-matrix case.
  readouts[1] = Matrix::Zero(kBatch, kUnits);
  LstmState initial{RandomMatrix(kBatch, kUnits, 30, 0.5f),
                    RandomMatrix(kBatch, kUnits, 31, 0.5f)};
  const LstmState final_weights{RandomMatrix(kBatch, kUnits, 40),
                                RandomMatrix(kBatch, kUnits, 41)};

  // L = sum_t <h_t, r_t> + <h_T, a> + <c_T, b>.
  auto loss = [&] {
    std::vector<Matrix> outputs;
    const LstmState last = lstm.Forward(inputs, initial, &outputs, nullptr);
    double total = 0.0;
    for (int t = 0; t < kSteps; ++t) {
      total += outputs[t].cast<double>().cwiseProduct(readouts[t].cast<double>()).sum();
    }
    total += last.h.cast<double>().cwiseProduct(final_weights.h.cast<double>()).sum();
    total += last.c.cast<double>().cwiseProduct(final_weights.c.cast<double>()).sum();
    return total;
  };

  Lstm::Cache cache;
  lstm.Forward(inputs, initial, nullptr, &cache);
  lstm.ZeroGradients();
  std::vector<Matrix> output_gradients = readouts;
  output_gradients[1] = Matrix();
  std::vector<Matrix> input_gradients;
  const LstmState initial_gradient =
      lstm.Backward(cache, output_gradients, final_weights, &input_gradients);
  const std::vector<Matrix> parameter_gradients = lstm.gradients();

  ExpectGradientMatches(&lstm.parameters()[0], parameter_gradients[0], loss, "W");
  ExpectGradientMatches(&lstm.parameters()[1], parameter_gradients[1], loss, "b");
  for (int t = 0; t < kSteps; ++t) {
    ExpectGradientMatches(&inputs[t], input_gradients[t], loss,
                          "x_" + std::to_string(t));
  }
  ExpectGradientMatches(&initial.h, initial_gradient.h, loss, "h_0");
  ExpectGradientMatches(&initial.c, initial_gradient.c, loss, "c_0");
}

TEST(LstmCreate, RejectsNonPositiveUnits) {
  EXPECT_FALSE(Lstm::Create(3, 0, 1).ok());
  EXPECT_FALSE(Lstm::Create(0, 3, 1).ok());
}

TEST(LstmCreate, ForgetBiasStartsAtOne) {
  absl::StatusOr<Lstm> lstm = Lstm::Create(2, 3, 1);
  ASSERT_TRUE(lstm.ok());
  const Matrix& bias = lstm->parameters()[1];
  EXPECT_EQ(bias.leftCols(3).cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_EQ(bias.middleCols(3, 3).minCoeff(), 1.0f);
  EXPECT_EQ(bias.rightCols(6).cwiseAbs().maxCoeff(), 0.0f);
}

constexpr int kBatch = 2;
constexpr int kBits = 3;

// A repeat-copy-shaped batch: sigmoid outputs scored on some steps only.
SequenceBatch SmallSequences(int length) {
  std::mt19937_64 rng(7);
  return MakeRepeatCopyBatch(kBatch, length, 1, 2, kBits, rng);
}

RecurrentCore MakeCore(bool auxiliary_head) {
  RecurrentCoreOptions options;
  options.input_dim = kBits + 2;
  options.units = 4;
  options.output_dim = kBits + 1;
  options.auxiliary_head = auxiliary_head;
  options.seed = 3;
  absl::StatusOr<RecurrentCore> core = RecurrentCore::Create(options);
  EXPECT_TRUE(core.ok()) << core.status();
  return *std::move(core);
}

// Returns every parameter matrix of the core, LSTM first.
std::vector<Matrix*> Parameters(RecurrentCore& core) {
  std::vector<Matrix*> all;
  for (Matrix& p : core.lstm().parameters()) all.push_back(&p);
  for (Matrix& p : core.readout()->parameters()) all.push_back(&p);
  if (core.auxiliary_head() != nullptr) {
    for (Matrix& p : core.auxiliary_head()->parameters()) all.push_back(&p);
  }
  return all;
}

std::vector<Matrix> Gradients(RecurrentCore& core) {
  std::vector<Matrix> all = core.lstm().gradients();
  for (const Matrix& g : core.readout()->gradients()) all.push_back(g);
  if (core.auxiliary_head() != nullptr) {
    for (const Matrix& g : core.auxiliary_head()->gradients()) all.push_back(g);
  }
  return all;
}

TEST(RecurrentCoreGradient, FullSequenceMatchesFiniteDifferences) {
  for (bool auxiliary : {false, true}) {
    RecurrentCore core = MakeCore(auxiliary);
    if (auxiliary) {
      // The head starts at zero; give it weight so its path carries gradient.
      for (Matrix& p : core.auxiliary_head()->parameters()) {
        p += RandomMatrix(p.rows(), p.cols(), 50, 0.3f);
      }
    }
    const SequenceBatch sequences = SmallSequences(2);
    const SequenceChunk whole = ChunkOf(sequences, 0, sequences.steps());
    const LstmState zero = LstmState::Zero(kBatch, 4);
    const Matrix auxiliary_target = RandomMatrix(kBatch, 8, 51);
    constexpr float kAuxiliaryWeight = 0.7f;

    auto loss = [&] {
      ChunkScore score;
      core.Forward(whole, zero, nullptr, &score);
      double total = score.loss;
      if (auxiliary) {
        std::vector<Matrix> outputs;
        core.lstm().Forward(whole.inputs, zero, &outputs, nullptr);
        for (const Matrix& h : outputs) {
          const Matrix residual =
              core.auxiliary_head()->Forward(h, nullptr) - auxiliary_target;
          total += kAuxiliaryWeight * 0.5 * residual.cast<double>().squaredNorm();
        }
      }
      return total;
    };

    RecurrentCore::Pass pass;
    core.Forward(whole, zero, &pass, nullptr);
    core.ZeroGradients();
    core.Backward(pass, zero, auxiliary ? &auxiliary_target : nullptr,
                  kAuxiliaryWeight);
    const std::vector<Matrix> gradients = Gradients(core);
    std::vector<Matrix*> parameters = Parameters(core);
    ASSERT_EQ(parameters.size(), gradients.size());
    for (size_t p = 0; p < parameters.size(); ++p) {
      ExpectGradientMatches(parameters[p], gradients[p], loss,
                            (auxiliary ? "with head, parameter " : "parameter ") +
                                std::to_string(p));
    }
  }
}

TEST(RecurrentCoreGradient, AuxiliaryLossLeavesStateGradientAlone) {
  RecurrentCore core = MakeCore(true);
  for (Matrix& p : core.auxiliary_head()->parameters()) {
    p += RandomMatrix(p.rows(), p.cols(), 52, 0.3f);
  }
  const SequenceBatch sequences = SmallSequences(2);
  const SequenceChunk whole = ChunkOf(sequences, 0, sequences.steps());
  const LstmState initial{RandomMatrix(kBatch, 4, 53), RandomMatrix(kBatch, 4, 54)};
  const LstmState boundary{RandomMatrix(kBatch, 4, 55), RandomMatrix(kBatch, 4, 56)};
  const Matrix auxiliary_target = RandomMatrix(kBatch, 8, 57);
  RecurrentCore::Pass pass;
  core.Forward(whole, initial, &pass, nullptr);

  core.ZeroGradients();
  const LstmState without = core.Backward(pass, boundary, nullptr, 0.0f);
  const Matrix lstm_without = core.lstm().gradients()[0];
  core.ZeroGradients();
  const LstmState with = core.Backward(pass, boundary, &auxiliary_target, 1.0f);
  ExpectClose(with.h, without.h, "h_0");
  ExpectClose(with.c, without.c, "c_0");
  // The auxiliary loss still trains the LSTM.
  EXPECT_GT((core.lstm().gradients()[0] - lstm_without).norm(), 1e-4f);
}

// Runs chunks of `truncation` steps forward from a zero state, carrying the
// state, and returns the passes.
std::vector<RecurrentCore::Pass> ForwardChunks(RecurrentCore& core,
                                               const SequenceBatch& sequences,
                                               int truncation) {
  std::vector<RecurrentCore::Pass> passes;
  LstmState state = LstmState::Zero(kBatch, 4);
  for (int begin = 0; begin < sequences.steps(); begin += truncation) {
    passes.emplace_back();
    state = core.Forward(ChunkOf(sequences, begin, truncation), state,
                         &passes.back(), nullptr);
  }
  return passes;
}

TEST(TruncatedBptt, ChunksWithTrueBoundaryGradientEqualFullBackprop) {
  RecurrentCore core = MakeCore(false);
  const SequenceBatch sequences = SmallSequences(3);  // 8 steps
  const LstmState zero = LstmState::Zero(kBatch, 4);

  std::vector<RecurrentCore::Pass> whole = ForwardChunks(core, sequences, 8);
  ASSERT_EQ(whole.size(), 1u);
  core.ZeroGradients();
  core.Backward(whole[0], zero, nullptr, 0.0f);
  const std::vector<Matrix> full = Gradients(core);

  // Backward from the last chunk to the first, passing each chunk's initial
  // state gradient to the previous chunk as its boundary gradient.
  std::vector<RecurrentCore::Pass> chunks = ForwardChunks(core, sequences, 3);
  ASSERT_EQ(chunks.size(), 3u);
  core.ZeroGradients();
  LstmState boundary = zero;
  for (int n = 2; n >= 0; --n) {
    boundary = core.Backward(chunks[n], boundary, nullptr, 0.0f);
  }
  const std::vector<Matrix> chained = Gradients(core);
  for (size_t p = 0; p < full.size(); ++p) {
    ExpectClose(chained[p], full[p], "parameter " + std::to_string(p));
  }
}

TEST(TruncatedBptt, MatchesFiniteDifferencesOfTruncatedLoss) {
  RecurrentCore core = MakeCore(false);
  const SequenceBatch sequences = SmallSequences(3);  // 8 steps
  constexpr int kTruncation = 3;

  // Chunk start states of the unperturbed parameters, held constant as
  // truncation does.
  std::vector<LstmState> starts;
  LstmState state = LstmState::Zero(kBatch, 4);
  for (int begin = 0; begin < sequences.steps(); begin += kTruncation) {
    starts.push_back(state);
    state = core.Forward(ChunkOf(sequences, begin, kTruncation), state, nullptr,
                         nullptr);
  }
  auto truncated_loss = [&] {
    double total = 0.0;
    for (size_t n = 0; n < starts.size(); ++n) {
      ChunkScore score;
      core.Forward(ChunkOf(sequences, static_cast<int>(n) * kTruncation,
                           kTruncation),
                   starts[n], nullptr, &score);
      total += score.loss;
    }
    return total;
  };

  std::vector<RecurrentCore::Pass> chunks =
      ForwardChunks(core, sequences, kTruncation);
  core.ZeroGradients();
  for (const RecurrentCore::Pass& pass : chunks) {
    core.Backward(pass, LstmState::Zero(kBatch, 4), nullptr, 0.0f);
  }
  const std::vector<Matrix> truncated = Gradients(core);
  std::vector<Matrix*> parameters = Parameters(core);
  for (size_t p = 0; p < parameters.size(); ++p) {
    ExpectGradientMatches(parameters[p], truncated[p], truncated_loss,
                          "parameter " + std::to_string(p));
  }

  // Truncation must change the LSTM weight gradient, or the check above
  // would not tell truncated from full backprop.
  std::vector<RecurrentCore::Pass> whole =
      ForwardChunks(core, sequences, sequences.steps());
  core.ZeroGradients();
  core.Backward(whole[0], LstmState::Zero(kBatch, 4), nullptr, 0.0f);
  EXPECT_GT((Gradients(core)[0] - truncated[0]).norm(), 1e-3f);
}

RecurrentCoreOptions CopyCoreOptions() {
  RecurrentCoreOptions options;
  options.input_dim = kBits + 1;
  options.units = 6;
  options.output_dim = kBits;
  options.seed = 11;
  return options;
}

std::unique_ptr<RecurrentTrainer> MakeTrainer(RecurrentMode mode) {
  RecurrentTrainerOptions options;
  options.mode = mode;
  options.learning_rate = 1e-2f;
  options.sg_learning_rate = 1e-2f;
  absl::StatusOr<std::unique_ptr<RecurrentTrainer>> trainer =
      RecurrentTrainer::Create(CopyCoreOptions(), options);
  EXPECT_TRUE(trainer.ok()) << trainer.status();
  return *std::move(trainer);
}

TEST(RecurrentTrainer, SyntheticGradientIsZeroBeforeFirstUpdate) {
  std::unique_ptr<RecurrentTrainer> trainer = MakeTrainer(RecurrentMode::kDni);
  const LstmState state{RandomMatrix(kBatch, 6, 60, 3.0f),
                        RandomMatrix(kBatch, 6, 61, 3.0f)};
  const LstmState predicted = trainer->PredictSyntheticGradient(state);
  EXPECT_EQ(predicted.h.cwiseAbs().maxCoeff(), 0.0f);
  EXPECT_EQ(predicted.c.cwiseAbs().maxCoeff(), 0.0f);

  std::mt19937_64 rng(1);
  const SequenceBatch sequences = MakeCopyBatch(kBatch, 3, kBits, rng);  // 7
  trainer->StartSequences(kBatch);
  // The first chunk starts at the zero state, which is no boundary, so M
  // stays untrained. The second chunk, steps 4 to 6, is scored and trains M
  // at its start state.
  EXPECT_FALSE(trainer->TrainChunk(ChunkOf(sequences, 0, 4), false).sg_trained);
  EXPECT_EQ(trainer->PredictSyntheticGradient(state).h.cwiseAbs().maxCoeff(),
            0.0f);
  EXPECT_TRUE(trainer->TrainChunk(ChunkOf(sequences, 4, 4), true).sg_trained);
  EXPECT_GT(trainer->PredictSyntheticGradient(state).h.cwiseAbs().maxCoeff(),
            0.0f);
}

TEST(RecurrentTrainer, DniMatchesBpttUntilSyntheticGradientIsNonzero) {
  std::unique_ptr<RecurrentTrainer> bptt = MakeTrainer(RecurrentMode::kBptt);
  std::unique_ptr<RecurrentTrainer> dni = MakeTrainer(RecurrentMode::kDni);
  std::mt19937_64 rng(2);
  const SequenceBatch sequences = MakeCopyBatch(kBatch, 4, kBits, rng);  // 9
  bptt->StartSequences(kBatch);
  dni->StartSequences(kBatch);
  // Chunks 1 and 2 (steps 0 to 5) inject M = 0, so both trainers take the
  // same steps.
  for (int begin : {0, 3}) {
    bptt->TrainChunk(ChunkOf(sequences, begin, 3), false);
    dni->TrainChunk(ChunkOf(sequences, begin, 3), false);
  }
  EXPECT_EQ(bptt->core().lstm().parameters()[0],
            dni->core().lstm().parameters()[0]);
  // Chunk 2 scored step 5 and trained M, so chunk 3, trained as not final,
  // injects lambda M(s_3), which is nonzero.
  bptt->TrainChunk(ChunkOf(sequences, 6, 3), false);
  dni->TrainChunk(ChunkOf(sequences, 6, 3), false);
  EXPECT_NE(bptt->core().lstm().parameters()[0],
            dni->core().lstm().parameters()[0]);
}

TEST(RecurrentTrainer, SyntheticGradientTargetIsStartGradient) {
  // M predicts zero before its first update, so its loss on the second
  // chunk is 0.5 ||target||^2 / B and reveals the target's norm.
  std::unique_ptr<RecurrentTrainer> trainer = MakeTrainer(RecurrentMode::kDni);
  std::mt19937_64 rng(3);
  const SequenceBatch sequences = MakeCopyBatch(kBatch, 4, kBits, rng);
  trainer->StartSequences(kBatch);
  trainer->TrainChunk(ChunkOf(sequences, 0, 4), false);
  const LstmState start = trainer->state();
  // Expected target: the gradient of the chunk's own loss at its start
  // state, since M still predicts zero at the end of the chunk.
  RecurrentCore::Pass pass;
  const SequenceChunk chunk = ChunkOf(sequences, 4, 5);
  trainer->core().Forward(chunk, start, &pass, nullptr);
  trainer->core().ZeroGradients();
  const LstmState expected = trainer->core().Backward(
      pass, LstmState::Zero(kBatch, 6), nullptr, 0.0f);
  const ChunkTrainResult result = trainer->TrainChunk(chunk, true);
  ASSERT_TRUE(result.sg_trained);
  // Before the update M predicts 0, so its L2 loss is 0.5 ||target||^2 / B.
  const double expected_loss =
      0.5 * ConcatenateState(expected).cast<double>().squaredNorm() / kBatch;
  EXPECT_NEAR(result.sg_loss, expected_loss, 1e-6 + 1e-4 * expected_loss);
  EXPECT_GT(expected_loss, 0.0);
}

TEST(CopyTask, LayoutMatchesDefinition) {
  std::mt19937_64 rng(4);
  const SequenceBatch copy = MakeCopyBatch(3, 5, 8, rng);
  ASSERT_EQ(copy.steps(), 11);
  for (int t = 0; t < 11; ++t) {
    ASSERT_EQ(copy.inputs[t].rows(), 3);
    ASSERT_EQ(copy.inputs[t].cols(), 9);
    const float delimiter = t == 5 ? 1.0f : 0.0f;
    EXPECT_EQ(copy.inputs[t].col(8).minCoeff(), delimiter) << "step " << t;
    EXPECT_EQ(copy.inputs[t].col(8).maxCoeff(), delimiter) << "step " << t;
    if (t <= 5) {
      EXPECT_EQ(copy.target_bits[t].size(), 0) << "step " << t;
    } else {
      ASSERT_EQ(copy.target_bits[t].cols(), 8);
      EXPECT_EQ(copy.target_bits[t], copy.inputs[t - 6].leftCols(8))
          << "step " << t;
      EXPECT_EQ(copy.inputs[t].cwiseAbs().maxCoeff(), 0.0f) << "step " << t;
    }
  }
  // The presented bits are binary and not constant.
  const Matrix& first = copy.inputs[0];
  EXPECT_TRUE(((first.array() == 0.0f) || (first.array() == 1.0f)).all());
  EXPECT_GT(first.sum(), 0.0f);
  EXPECT_LT(first.sum(), 24.0f);
}

TEST(RepeatCopyTask, LayoutMatchesDefinition) {
  std::mt19937_64 rng(5);
  constexpr int kLength = 3, kRepeats = 2, kMaxRepeats = 4;
  const SequenceBatch repeat =
      MakeRepeatCopyBatch(2, kLength, kRepeats, kMaxRepeats, 8, rng);
  ASSERT_EQ(repeat.steps(), kLength + 1 + kRepeats * kLength + 1);
  const Matrix& delimiter = repeat.inputs[kLength];
  EXPECT_EQ(delimiter.col(8).minCoeff(), 1.0f);
  EXPECT_FLOAT_EQ(delimiter.col(9).minCoeff(), 0.5f);
  EXPECT_EQ(delimiter.leftCols(8).cwiseAbs().maxCoeff(), 0.0f);
  for (int t = 0; t <= kLength; ++t) {
    EXPECT_EQ(repeat.target_bits[t].size(), 0) << "step " << t;
  }
  for (int r = 0; r < kRepeats; ++r) {
    for (int t = 0; t < kLength; ++t) {
      const Matrix& target = repeat.target_bits[kLength + 1 + r * kLength + t];
      ASSERT_EQ(target.cols(), 9);
      EXPECT_EQ(target.leftCols(8), repeat.inputs[t].leftCols(8))
          << "repeat " << r << " step " << t;
      EXPECT_EQ(target.col(8).maxCoeff(), 0.0f);
    }
  }
  const Matrix& end = repeat.target_bits.back();
  EXPECT_EQ(end.col(8).minCoeff(), 1.0f);
  EXPECT_EQ(end.leftCols(8).cwiseAbs().maxCoeff(), 0.0f);
}

TEST(LengthCurriculum, GrowsOnlyBelowThreshold) {
  LengthCurriculum curriculum(0.15, 3);
  EXPECT_EQ(curriculum.length(), 1);
  EXPECT_EQ(curriculum.solved_length(), 0);
  EXPECT_FALSE(curriculum.Record(0.1));
  EXPECT_FALSE(curriculum.Record(0.1));
  EXPECT_FALSE(curriculum.Record(0.5));  // mean 0.23
  EXPECT_FALSE(curriculum.Record(0.1));  // window 0.1, 0.5, 0.1
  EXPECT_FALSE(curriculum.Record(0.1));  // window 0.5, 0.1, 0.1
  EXPECT_TRUE(curriculum.Record(0.1));
  EXPECT_EQ(curriculum.length(), 2);
  EXPECT_EQ(curriculum.solved_length(), 1);
  // The window restarts at the new length.
  EXPECT_FALSE(curriculum.Record(0.0));
}

TEST(KingJamesBible, ParsesHeadingsAndVerses) {
  const std::string output =
      "\nGenesis 1\n\n  1 In the beginning.\n  2 And the earth.\n"
      "\n1 Kings 2\n\n  10 So David slept.\n";
  absl::StatusOr<BibleVerses> verses = ParseBibleOutput(output);
  ASSERT_TRUE(verses.ok()) << verses.status();
  ASSERT_EQ(verses->text.size(), 3u);
  EXPECT_EQ(verses->text[0], "In the beginning.");
  EXPECT_EQ(verses->text[2], "So David slept.");
  EXPECT_EQ(verses->chapter, (std::vector<int>{0, 0, 1}));
  EXPECT_FALSE(ParseBibleOutput("  1 verse before any heading\n").ok());
  EXPECT_FALSE(ParseBibleOutput("").ok());
}

TEST(KingJamesBible, SplitIsDeterministicAndDisjoint) {
  absl::StatusOr<BibleVerses> first = LoadKingJamesBible("bible");
  ASSERT_TRUE(first.ok()) << first.status();
  absl::StatusOr<BibleVerses> second = LoadKingJamesBible("bible");
  ASSERT_TRUE(second.ok()) << second.status();
  // The KJV has 31102 verses in 1189 chapters.
  EXPECT_EQ(first->text.size(), 31102u);
  EXPECT_EQ(first->chapter.back(), 1188);

  const TextSplit a = SplitByChapter(*first);
  const TextSplit b = SplitByChapter(*second);
  EXPECT_EQ(a.train, b.train);
  EXPECT_EQ(a.validation, b.validation);
  EXPECT_EQ(a.test, b.test);

  // Each chapter lands in exactly one split, whole: rebuilding each split
  // from its chapters gives the split, and the sizes add up.
  std::string train, validation, test;
  std::set<int> validation_chapters, test_chapters;
  size_t total = 0;
  for (size_t i = 0; i < first->text.size(); ++i) {
    const int chapter = first->chapter[i];
    const std::string line = first->text[i] + "\n";
    total += line.size();
    if (chapter % 20 == 18) {
      validation += line;
      validation_chapters.insert(chapter);
    } else if (chapter % 20 == 19) {
      test += line;
      test_chapters.insert(chapter);
    } else {
      train += line;
    }
  }
  EXPECT_EQ(a.train, train);
  EXPECT_EQ(a.validation, validation);
  EXPECT_EQ(a.test, test);
  EXPECT_EQ(a.train.size() + a.validation.size() + a.test.size(), total);
  EXPECT_EQ(validation_chapters.size(), 59u);
  EXPECT_EQ(test_chapters.size(), 59u);
  // Genesis 20 is the first test chapter.
  EXPECT_EQ(a.test.rfind("And Abraham journeyed from thence", 0), 0u);
}

TEST(CharacterStream, TargetsAreNextCharacters) {
  const std::string text = "abcab\n";
  const CharacterVocabulary vocabulary(text);
  ASSERT_EQ(vocabulary.size(), 4);  // '\n', a, b, c
  EXPECT_EQ(vocabulary.Id('\n'), 0);
  EXPECT_EQ(vocabulary.Id('c'), 3);
  EXPECT_EQ(vocabulary.Id('z'), -1);
  CharacterStream stream(&text, &vocabulary, 2);  // lanes at 0 and 3
  const SequenceChunk chunk = stream.Next(4);
  ASSERT_EQ(chunk.steps(), 4);
  EXPECT_EQ(chunk.inputs[0](0, vocabulary.Id('a')), 1.0f);
  EXPECT_EQ(chunk.target_classes[0][0], vocabulary.Id('b'));
  EXPECT_EQ(chunk.inputs[0](1, vocabulary.Id('a')), 1.0f);
  EXPECT_EQ(chunk.target_classes[2][1], vocabulary.Id('a'));  // wraps
  EXPECT_EQ(chunk.inputs[0].sum(), 2.0f);
}

}  // namespace
}  // namespace synthgrad
