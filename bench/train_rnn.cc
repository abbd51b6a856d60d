// Trains an LSTM on Copy, Repeat Copy or King James Bible character
// modelling with truncated BPTT, DNI or DNI+Aux, in one thread, and prints a
// final RESULT line that bench/rnn_results.sh collects.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "common/recurrent_trainer.h"
#include "common/sequence_tasks.h"

ABSL_FLAG(std::string, task, "copy",
          "Task: copy, repeat_copy or char_lm (King James Bible characters).");
ABSL_FLAG(std::string, mode, "bptt",
          "Training mode: bptt (truncated BPTT), dni (synthetic gradient at "
          "each chunk boundary) or dni_aux (dni plus the auxiliary task of "
          "predicting the synthetic gradient at the chunk's end).");
ABSL_FLAG(int, truncation, 3, "Truncation window T, in time steps per chunk.");
ABSL_FLAG(int, units, 128, "LSTM units.");
ABSL_FLAG(int, batch, 32, "Sequences per batch (parallel lanes for char_lm).");
ABSL_FLAG(int64_t, budget_steps, 100000,
          "Training budget in time steps per lane: for copy tasks the summed "
          "length of all trained sequences, for char_lm the characters read "
          "per lane.");
ABSL_FLAG(double, learning_rate, 1e-3, "Adam learning rate of the LSTM.");
ABSL_FLAG(double, sg_scale, 0.1,
          "Factor on the injected synthetic gradient and on the bootstrapped "
          "term of its target.");
ABSL_FLAG(double, sg_learning_rate, 1e-3,
          "Adam learning rate of the synthetic-gradient model.");
ABSL_FLAG(std::string, sg_hidden, "",
          "Comma-separated hidden widths of the synthetic-gradient model; "
          "empty makes it linear.");
ABSL_FLAG(double, aux_weight, 1.0,
          "Weight of the dni_aux loss relative to the task loss.");
ABSL_FLAG(double, clip, 1.0,
          "Maximum global L2 norm of the batch-mean LSTM gradient; 0 turns "
          "clipping off.");
ABSL_FLAG(int, bits, 8, "Copy tasks: bits per vector.");
ABSL_FLAG(int, max_repeats, 2,
          "repeat_copy: repeat counts are drawn uniformly from 1 to this, "
          "one per batch.");
ABSL_FLAG(double, threshold, 0.15,
          "Copy tasks: the length grows when the mean error falls below this "
          "many bits per sequence.");
ABSL_FLAG(int, window, 20,
          "Copy tasks: batches averaged for the curriculum's error.");
ABSL_FLAG(std::string, bible, "bible",
          "char_lm: the bible program of Debian's bible-kjv package.");
ABSL_FLAG(int64_t, seed, 1, "Seed of the weights and the data.");
ABSL_FLAG(int64_t, report_every, 20000,
          "Print a progress line every this many time steps per lane.");

namespace synthgrad {
namespace {

double Seconds(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
      .count();
}

// Returns the result-line fields shared by all tasks.
std::string CommonFields(double seconds) {
  return "task=" + absl::GetFlag(FLAGS_task) +
         " mode=" + absl::GetFlag(FLAGS_mode) +
         " T=" + std::to_string(absl::GetFlag(FLAGS_truncation)) +
         " units=" + std::to_string(absl::GetFlag(FLAGS_units)) +
         " budget_steps=" + std::to_string(absl::GetFlag(FLAGS_budget_steps)) +
         " seconds=" + std::to_string(seconds);
}

int RunCopy(RecurrentTrainer& trainer, bool repeat) {
  const int batch = absl::GetFlag(FLAGS_batch);
  const int bits = absl::GetFlag(FLAGS_bits);
  const int truncation = absl::GetFlag(FLAGS_truncation);
  const int max_repeats = absl::GetFlag(FLAGS_max_repeats);
  const int64_t budget = absl::GetFlag(FLAGS_budget_steps);
  const int64_t report_every = absl::GetFlag(FLAGS_report_every);
  std::mt19937_64 rng(static_cast<uint64_t>(absl::GetFlag(FLAGS_seed)) + 100);
  std::uniform_int_distribution<int> repeat_count(1, max_repeats);
  LengthCurriculum curriculum(absl::GetFlag(FLAGS_threshold),
                              absl::GetFlag(FLAGS_window));

  const auto start = std::chrono::steady_clock::now();
  int64_t steps = 0;
  int64_t next_report = report_every;
  double recent_errors = 0.0;
  int recent_batches = 0;
  while (steps < budget) {
    const int length = curriculum.length();
    const SequenceBatch sequences =
        repeat ? MakeRepeatCopyBatch(batch, length, repeat_count(rng),
                                     max_repeats, bits, rng)
               : MakeCopyBatch(batch, length, bits, rng);
    trainer.StartSequences(batch);
    int64_t errors = 0;
    for (int begin = 0; begin < sequences.steps(); begin += truncation) {
      const bool last = begin + truncation >= sequences.steps();
      errors += trainer.TrainChunk(ChunkOf(sequences, begin, truncation), last)
                    .score.errors;
    }
    steps += sequences.steps();
    const double errors_per_sequence =
        static_cast<double>(errors) / static_cast<double>(batch);
    recent_errors += errors_per_sequence;
    ++recent_batches;
    if (curriculum.Record(errors_per_sequence)) {
      std::fprintf(stderr, "step %lld: solved length %d after %.0f s\n",
                   static_cast<long long>(steps), curriculum.solved_length(),
                   Seconds(start));
    }
    if (steps >= next_report) {
      std::fprintf(stderr,
                   "step %lld: length %d, mean error %.3f bits per sequence\n",
                   static_cast<long long>(steps), curriculum.length(),
                   recent_errors / recent_batches);
      recent_errors = 0.0;
      recent_batches = 0;
      next_report += report_every;
    }
  }
  std::printf("RESULT %s solved_length=%d\n", CommonFields(Seconds(start)).c_str(),
              curriculum.solved_length());
  return 0;
}

// Returns bits per character of the core on `text`, read as `lanes`
// contiguous segments with the state carried through each.
double BitsPerCharacter(RecurrentCore& core, const std::string& text,
                        const CharacterVocabulary& vocabulary, int lanes) {
  CharacterStream stream(&text, &vocabulary, lanes);
  // Each lane reads its segment minus one character, so no lane wraps.
  const int64_t steps = static_cast<int64_t>(text.size()) / lanes - 1;
  LstmState state = LstmState::Zero(lanes, core.options().units);
  double nats = 0.0;
  int64_t scored = 0;
  constexpr int kChunk = 100;
  for (int64_t done = 0; done < steps; done += kChunk) {
    const int length = static_cast<int>(std::min<int64_t>(kChunk, steps - done));
    ChunkScore score;
    state = core.Forward(stream.Next(length), state, nullptr, &score);
    nats += score.loss;
    scored += score.scored_steps;
  }
  return nats / static_cast<double>(scored) / std::log(2.0);
}

int RunCharacterModel(RecurrentTrainer& trainer, const TextSplit& split,
                      const CharacterVocabulary& vocabulary) {
  const int batch = absl::GetFlag(FLAGS_batch);
  const int truncation = absl::GetFlag(FLAGS_truncation);
  const int64_t budget = absl::GetFlag(FLAGS_budget_steps);
  const int64_t report_every = absl::GetFlag(FLAGS_report_every);

  const auto start = std::chrono::steady_clock::now();
  CharacterStream stream(&split.train, &vocabulary, batch);
  trainer.StartSequences(batch);
  int64_t steps = 0;
  int64_t next_report = report_every;
  double nats = 0.0;
  int64_t scored = 0;
  double sg_cosine = 0.0;
  int sg_updates = 0;
  while (steps < budget) {
    const ChunkTrainResult result =
        trainer.TrainChunk(stream.Next(truncation), /*sequence_ends=*/false);
    nats += result.score.loss;
    scored += result.score.scored_steps;
    if (result.sg_trained) {
      sg_cosine += result.sg_cosine;
      ++sg_updates;
    }
    steps += truncation;
    if (steps >= next_report) {
      std::fprintf(stderr,
                   "step %lld: train %.3f bits per character, synthetic "
                   "gradient cosine %.3f, %.0f s\n",
                   static_cast<long long>(steps),
                   nats / static_cast<double>(scored) / std::log(2.0),
                   sg_updates > 0 ? sg_cosine / sg_updates : 0.0,
                   Seconds(start));
      nats = 0.0;
      scored = 0;
      sg_cosine = 0.0;
      sg_updates = 0;
      next_report += report_every;
    }
  }
  const double train_seconds = Seconds(start);
  const double validation =
      BitsPerCharacter(trainer.core(), split.validation, vocabulary, 16);
  const double test = BitsPerCharacter(trainer.core(), split.test, vocabulary, 16);
  std::printf("RESULT %s validation_bpc=%.4f test_bpc=%.4f\n",
              CommonFields(train_seconds).c_str(), validation, test);
  return 0;
}

int Run() {
  const std::string task = absl::GetFlag(FLAGS_task);
  const std::string mode_name = absl::GetFlag(FLAGS_mode);
  RecurrentTrainerOptions options;
  if (mode_name == "bptt") {
    options.mode = RecurrentMode::kBptt;
  } else if (mode_name == "dni") {
    options.mode = RecurrentMode::kDni;
  } else if (mode_name == "dni_aux") {
    options.mode = RecurrentMode::kDniAux;
  } else {
    std::fprintf(stderr, "invalid --mode=%s; use bptt, dni or dni_aux\n",
                 mode_name.c_str());
    return 2;
  }
  if (absl::GetFlag(FLAGS_truncation) <= 0 || absl::GetFlag(FLAGS_batch) <= 0 ||
      absl::GetFlag(FLAGS_budget_steps) <= 0 || absl::GetFlag(FLAGS_bits) <= 0 ||
      absl::GetFlag(FLAGS_max_repeats) <= 0 || absl::GetFlag(FLAGS_window) <= 0 ||
      absl::GetFlag(FLAGS_report_every) <= 0) {
    std::fprintf(stderr,
                 "--truncation, --batch, --budget_steps, --bits, --max_repeats, "
                 "--window and --report_every must be positive\n");
    return 2;
  }
  options.learning_rate = static_cast<float>(absl::GetFlag(FLAGS_learning_rate));
  options.sg_scale = static_cast<float>(absl::GetFlag(FLAGS_sg_scale));
  options.sg_learning_rate =
      static_cast<float>(absl::GetFlag(FLAGS_sg_learning_rate));
  options.auxiliary_weight = static_cast<float>(absl::GetFlag(FLAGS_aux_weight));
  options.gradient_clip_norm = static_cast<float>(absl::GetFlag(FLAGS_clip));
  for (absl::string_view width :
       absl::StrSplit(absl::GetFlag(FLAGS_sg_hidden), ',', absl::SkipEmpty())) {
    int units = 0;
    if (!absl::SimpleAtoi(width, &units) || units <= 0) {
      std::fprintf(stderr, "invalid width \"%s\" in --sg_hidden\n",
                   std::string(width).c_str());
      return 2;
    }
    options.sg_hidden_units.push_back(units);
  }

  RecurrentCoreOptions core;
  core.units = absl::GetFlag(FLAGS_units);
  core.seed = static_cast<uint64_t>(absl::GetFlag(FLAGS_seed));
  const int bits = absl::GetFlag(FLAGS_bits);
  TextSplit split;
  std::unique_ptr<CharacterVocabulary> vocabulary;
  if (task == "copy") {
    core.input_dim = bits + 1;
    core.output_dim = bits;
  } else if (task == "repeat_copy") {
    core.input_dim = bits + 2;
    core.output_dim = bits + 1;
  } else if (task == "char_lm") {
    absl::StatusOr<BibleVerses> verses =
        LoadKingJamesBible(absl::GetFlag(FLAGS_bible));
    if (!verses.ok()) {
      std::fprintf(stderr, "%s\n", verses.status().ToString().c_str());
      return 1;
    }
    split = SplitByChapter(*verses);
    // The vocabulary comes from the training split; the few characters seen
    // only in validation or test map to class 0.
    vocabulary = std::make_unique<CharacterVocabulary>(split.train);
    core.input_dim = vocabulary->size();
    core.output_dim = vocabulary->size();
    core.output_kind = OutputKind::kSoftmaxClasses;
    std::fprintf(stderr,
                 "King James Bible: %zu train, %zu validation, %zu test "
                 "characters, %d classes\n",
                 split.train.size(), split.validation.size(), split.test.size(),
                 vocabulary->size());
  } else {
    std::fprintf(stderr,
                 "invalid --task=%s; use copy, repeat_copy or char_lm\n",
                 task.c_str());
    return 2;
  }

  absl::StatusOr<std::unique_ptr<RecurrentTrainer>> trainer =
      RecurrentTrainer::Create(core, options);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", trainer.status().ToString().c_str());
    return 2;
  }
  if (task == "char_lm") return RunCharacterModel(**trainer, split, *vocabulary);
  return RunCopy(**trainer, task == "repeat_copy");
}

}  // namespace
}  // namespace synthgrad

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains an LSTM with truncated BPTT, DNI or DNI+Aux on a recurrent task "
      "and prints a RESULT line.\n"
      "  train_rnn --task=copy --mode=dni --truncation=3 --budget_steps=200000");
  absl::ParseCommandLine(argc, argv);
  return synthgrad::Run();
}
