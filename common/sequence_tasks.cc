#include "common/sequence_tasks.h"

#include <cstdio>
#include <numeric>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace synthgrad {
namespace {

Matrix RandomBits(int batch, int bits, std::mt19937_64& rng) {
  std::bernoulli_distribution fair(0.5);
  Matrix m(batch, bits);
  for (Eigen::Index k = 0; k < m.size(); ++k) {
    m.data()[k] = fair(rng) ? 1.0f : 0.0f;
  }
  return m;
}

}  // namespace

SequenceBatch MakeCopyBatch(int batch, int length, int bits,
                            std::mt19937_64& rng) {
  SequenceBatch sequences;
  std::vector<Matrix> vectors;
  for (int t = 0; t < length; ++t) {
    vectors.push_back(RandomBits(batch, bits, rng));
    Matrix input = Matrix::Zero(batch, bits + 1);
    input.leftCols(bits) = vectors.back();
    sequences.inputs.push_back(std::move(input));
    sequences.target_bits.emplace_back();
  }
  Matrix delimiter = Matrix::Zero(batch, bits + 1);
  delimiter.col(bits).setOnes();
  sequences.inputs.push_back(std::move(delimiter));
  sequences.target_bits.emplace_back();
  for (int t = 0; t < length; ++t) {
    sequences.inputs.push_back(Matrix::Zero(batch, bits + 1));
    sequences.target_bits.push_back(vectors[t]);
  }
  return sequences;
}

SequenceBatch MakeRepeatCopyBatch(int batch, int length, int repeats,
                                  int max_repeats, int bits,
                                  std::mt19937_64& rng) {
  SequenceBatch sequences;
  std::vector<Matrix> vectors;
  for (int t = 0; t < length; ++t) {
    vectors.push_back(RandomBits(batch, bits, rng));
    Matrix input = Matrix::Zero(batch, bits + 2);
    input.leftCols(bits) = vectors.back();
    sequences.inputs.push_back(std::move(input));
    sequences.target_bits.emplace_back();
  }
  Matrix delimiter = Matrix::Zero(batch, bits + 2);
  delimiter.col(bits).setOnes();
  delimiter.col(bits + 1).setConstant(static_cast<float>(repeats) /
                                      static_cast<float>(max_repeats));
  sequences.inputs.push_back(std::move(delimiter));
  sequences.target_bits.emplace_back();
  for (int r = 0; r < repeats; ++r) {
    for (int t = 0; t < length; ++t) {
      sequences.inputs.push_back(Matrix::Zero(batch, bits + 2));
      Matrix target = Matrix::Zero(batch, bits + 1);
      target.leftCols(bits) = vectors[t];
      sequences.target_bits.push_back(std::move(target));
    }
  }
  sequences.inputs.push_back(Matrix::Zero(batch, bits + 2));
  Matrix end = Matrix::Zero(batch, bits + 1);
  end.col(bits).setOnes();
  sequences.target_bits.push_back(std::move(end));
  return sequences;
}

SequenceChunk ChunkOf(const SequenceBatch& sequences, int begin, int steps) {
  SequenceChunk chunk;
  const int end = std::min(begin + steps, sequences.steps());
  for (int t = begin; t < end; ++t) {
    chunk.inputs.push_back(sequences.inputs[t]);
    chunk.target_bits.push_back(sequences.target_bits[t]);
  }
  return chunk;
}

bool LengthCurriculum::Record(double errors_per_sequence) {
  recent_.push_back(errors_per_sequence);
  if (static_cast<int>(recent_.size()) > window_) recent_.erase(recent_.begin());
  if (static_cast<int>(recent_.size()) < window_) return false;
  const double mean =
      std::accumulate(recent_.begin(), recent_.end(), 0.0) / window_;
  if (mean >= threshold_) return false;
  ++length_;
  recent_.clear();
  return true;
}

absl::StatusOr<BibleVerses> ParseBibleOutput(const std::string& output) {
  BibleVerses verses;
  std::istringstream lines(output);
  std::string line;
  int chapter = -1;
  while (std::getline(lines, line)) {
    if (line.empty()) continue;
    if (line[0] != ' ') {
      // A heading such as "Genesis 1" or "1 Kings 3" starts a chapter.
      ++chapter;
      continue;
    }
    const absl::string_view stripped = absl::StripLeadingAsciiWhitespace(line);
    const size_t space = stripped.find(' ');
    int number = 0;
    if (chapter < 0 || space == absl::string_view::npos ||
        !absl::SimpleAtoi(stripped.substr(0, space), &number)) {
      return absl::DataLossError(
          absl::StrCat("bible output: expected \"  <number> <text>\" after a "
                       "chapter heading, got \"", line, "\""));
    }
    verses.text.emplace_back(stripped.substr(space + 1));
    verses.chapter.push_back(chapter);
  }
  if (verses.text.empty()) {
    return absl::DataLossError("bible output contains no verse");
  }
  return verses;
}

absl::StatusOr<BibleVerses> LoadKingJamesBible(const std::string& program) {
  const std::string command =
      absl::StrCat(program, " -l100000 gen1:1-rev22:21 2>/dev/null");
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot run \"", command, "\""));
  }
  std::string output;
  char buffer[1 << 16];
  size_t read;
  while ((read = fread(buffer, 1, sizeof(buffer), pipe)) > 0) {
    output.append(buffer, read);
  }
  const int status = pclose(pipe);
  if (status != 0 || output.empty()) {
    return absl::NotFoundError(absl::StrCat(
        "\"", command, "\" failed with status ", status,
        "; install the Debian package bible-kjv"));
  }
  return ParseBibleOutput(output);
}

TextSplit SplitByChapter(const BibleVerses& verses) {
  TextSplit split;
  for (size_t i = 0; i < verses.text.size(); ++i) {
    const int slot = verses.chapter[i] % 20;
    std::string& destination = slot == 18   ? split.validation
                               : slot == 19 ? split.test
                                            : split.train;
    destination += verses.text[i];
    destination += '\n';
  }
  return split;
}

CharacterVocabulary::CharacterVocabulary(const std::string& text) {
  bool present[256] = {};
  for (unsigned char c : text) present[c] = true;
  for (int c = 0; c < 256; ++c) {
    ids_[c] = -1;
    if (present[c]) {
      ids_[c] = static_cast<int>(characters_.size());
      characters_.push_back(static_cast<unsigned char>(c));
    }
  }
}

CharacterStream::CharacterStream(const std::string* text,
                                 const CharacterVocabulary* vocabulary,
                                 int batch)
    : text_(text), vocabulary_(vocabulary) {
  const int64_t size = static_cast<int64_t>(text->size());
  for (int b = 0; b < batch; ++b) positions_.push_back(b * size / batch);
}

SequenceChunk CharacterStream::Next(int steps) {
  const int batch = static_cast<int>(positions_.size());
  const int64_t size = static_cast<int64_t>(text_->size());
  SequenceChunk chunk;
  for (int t = 0; t < steps; ++t) {
    Matrix input = Matrix::Zero(batch, vocabulary_->size());
    std::vector<int32_t> targets(batch);
    for (int b = 0; b < batch; ++b) {
      const int64_t p = positions_[b];
      const int64_t next = (p + 1) % size;
      // Characters outside the vocabulary (absent from the text it was
      // built from) map to class 0.
      input(b, std::max(0, vocabulary_->Id((*text_)[p]))) = 1.0f;
      targets[b] = std::max(0, vocabulary_->Id((*text_)[next]));
      positions_[b] = next;
    }
    chunk.inputs.push_back(std::move(input));
    chunk.target_classes.push_back(std::move(targets));
  }
  return chunk;
}

}  // namespace synthgrad
