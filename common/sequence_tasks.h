// Data for the recurrent tasks: Copy and Repeat Copy (Graves et al. 2014,
// "Neural Turing Machines") with a length curriculum,
// and character-level language modelling on the King James Bible.
#ifndef SYNTHGRAD_COMMON_SEQUENCE_TASKS_H_
#define SYNTHGRAD_COMMON_SEQUENCE_TASKS_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/recurrent_trainer.h"
#include "common/tensor.h"

namespace synthgrad {

// A batch of B whole sequences of equal length, step by step.
struct SequenceBatch {
  // Per step [B, input width].
  std::vector<Matrix> inputs;
  // Per step [B, output width], or an empty matrix where nothing is scored.
  std::vector<Matrix> target_bits;

  int steps() const { return static_cast<int>(inputs.size()); }
};

// Copy. Input width bits + 1, output width bits. Steps 0..L-1 present L
// random vectors of `bits` fair bits on channels [0, bits). Step L sets the
// delimiter channel `bits` alone. Steps L+1..2L have zero input and target
// the L vectors in order; only these L steps are scored.
SequenceBatch MakeCopyBatch(int batch, int length, int bits,
                            std::mt19937_64& rng);

// Repeat Copy with R repeats, one R for the whole batch. Input width
// bits + 2, output width bits + 1. Steps 0..L-1 present the L vectors.
// Step L sets the delimiter channel `bits` and puts R / max_repeats on the
// repeat channel bits + 1. The next R * L steps have zero input and target
// the vectors R times over with the end channel `bits` at 0. The final step
// targets zero bits with the end channel at 1. Only the R * L + 1 steps
// after the delimiter are scored.
SequenceBatch MakeRepeatCopyBatch(int batch, int length, int repeats,
                                  int max_repeats, int bits,
                                  std::mt19937_64& rng);

// Cuts steps [begin, begin + T) of `sequences` (fewer at the end) into a
// chunk.
SequenceChunk ChunkOf(const SequenceBatch& sequences, int begin, int steps);

// The length curriculum of Graves et al. 2014 as used by Jaderberg et al.
// 2017: training starts at length 1 and the length grows by one whenever the
// mean error over the last `window` batches at the current length falls
// below `threshold` bits per sequence.
class LengthCurriculum {
 public:
  LengthCurriculum(double threshold, int window)
      : threshold_(threshold), window_(window) {}

  // Current training length.
  int length() const { return length_; }
  // Maximum length solved so far, 0 before the first.
  int solved_length() const { return length_ - 1; }

  // Records one batch's mean error in bits per sequence. Returns true when
  // the length grows.
  bool Record(double errors_per_sequence);

 private:
  double threshold_;
  int window_;
  int length_ = 1;
  std::vector<double> recent_;
};

// Verses of the King James Bible, one string each without its number, in
// order, with the chapter each belongs to.
struct BibleVerses {
  std::vector<std::string> text;
  std::vector<int> chapter;  // 0-based over the whole Bible
};

// Parses the output of Debian's `bible` program (package bible-kjv) run with
// a line width large enough that no verse wraps: a chapter heading line
// ("Genesis 1"), an empty line, then one "  <number> <text>" line per
// verse. Fails with DATA_LOSS when no verse is found.
absl::StatusOr<BibleVerses> ParseBibleOutput(const std::string& output);

// Runs `bible -l100000 gen1:1-rev22:21` through `program` (a path or a name
// looked up on PATH) and parses its output. Fails with NOT_FOUND when the
// program cannot run; install the Debian package bible-kjv.
absl::StatusOr<BibleVerses> LoadKingJamesBible(const std::string& program);

// A deterministic split by chapter: of every 20 chapters in Bible order,
// number 18 (0-based) goes to validation, 19 to test and the rest to train,
// so each split spans the whole Bible and no verse is in two splits. Each
// verse ends with '\n'.
struct TextSplit {
  std::string train;
  std::string validation;
  std::string test;
};
TextSplit SplitByChapter(const BibleVerses& verses);

// Maps bytes to class ids 0..size-1 in byte order, built from the bytes
// that occur in `text`.
class CharacterVocabulary {
 public:
  explicit CharacterVocabulary(const std::string& text);
  int size() const { return static_cast<int>(characters_.size()); }
  // Returns the id of `c`, or -1 when `c` is not in the vocabulary.
  int Id(unsigned char c) const { return ids_[c]; }

 private:
  std::vector<unsigned char> characters_;
  int ids_[256];
};

// Reads a text as B parallel streams, lane b starting at b * size / B, and
// yields chunks for next-character prediction. At each step a lane's input
// is the one-hot character at its position p and its target the character
// at p + 1.
// A lane wraps to the text's start at the end.
class CharacterStream {
 public:
  CharacterStream(const std::string* text, const CharacterVocabulary* vocabulary,
                  int batch);

  // Returns the next `steps` steps of every lane.
  SequenceChunk Next(int steps);

 private:
  const std::string* text_;
  const CharacterVocabulary* vocabulary_;
  std::vector<int64_t> positions_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_COMMON_SEQUENCE_TASKS_H_
