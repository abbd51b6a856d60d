// Trains a job spec with every group in one thread (InProcessTrainer), the
// no-network baseline, and prints per-epoch loss, test accuracy and
// throughput.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/types/span.h"
#include "common/dataset.h"
#include "common/in_process_trainer.h"
#include "common/job_spec.h"

ABSL_FLAG(std::string, spec, "", "Job spec file in Protobuf text format.");
ABSL_FLAG(std::string, mode, "",
          "Overrides the spec's mode: backprop, dni or cdni. Empty keeps it.");
ABSL_FLAG(int, epochs, 0, "Overrides the spec's epoch count when positive.");

namespace synthgrad {
namespace {

int Run() {
  std::ifstream file(absl::GetFlag(FLAGS_spec));
  if (!file) {
    std::fprintf(stderr, "cannot read --spec=%s\n",
                 absl::GetFlag(FLAGS_spec).c_str());
    return 2;
  }
  std::stringstream text;
  text << file.rdbuf();
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text.str());
  if (!spec.ok()) {
    std::fprintf(stderr, "%s\n", spec.status().ToString().c_str());
    return 2;
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "backprop") spec->set_mode(v1::TRAINING_MODE_BACKPROP);
  if (mode == "dni") spec->set_mode(v1::TRAINING_MODE_DNI);
  if (mode == "cdni") spec->set_mode(v1::TRAINING_MODE_CDNI);
  if (absl::GetFlag(FLAGS_epochs) > 0) spec->set_epochs(absl::GetFlag(FLAGS_epochs));

  absl::StatusOr<TrainTestData> data = LoadFashionMnist(
      spec->data().dir(), spec->data().train_limit(), spec->data().test_limit());
  if (!data.ok()) {
    std::fprintf(stderr, "%s\n", data.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<InProcessTrainer>> trainer =
      InProcessTrainer::Create(*spec);
  if (!trainer.ok()) {
    std::fprintf(stderr, "%s\n", trainer.status().ToString().c_str());
    return 2;
  }

  int64_t batch_id = 0;
  Matrix x;
  std::vector<int32_t> labels;
  for (int epoch = 1; epoch <= spec->epochs(); ++epoch) {
    const auto start = std::chrono::steady_clock::now();
    const std::vector<int64_t> order =
        EpochOrder(data->train.size(), spec->seed(), epoch);
    double loss_sum = 0;
    int64_t seen = 0;
    for (size_t begin = 0; begin < order.size(); begin += spec->batch_size()) {
      const size_t end = std::min(order.size(), begin + spec->batch_size());
      GatherBatch(data->train,
                  absl::MakeConstSpan(order.data() + begin, end - begin), &x,
                  &labels);
      absl::StatusOr<BatchReport> report =
          (*trainer)->Train(++batch_id, x, labels);
      if (!report.ok()) {
        std::fprintf(stderr, "%s\n", report.status().ToString().c_str());
        return 1;
      }
      loss_sum += report->mean_loss * report->examples;
      seen += report->examples;
    }
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - start)
                               .count();
    std::vector<int64_t> test_order(data->test.size());
    for (size_t i = 0; i < test_order.size(); ++i) test_order[i] = i;
    int64_t correct = 0;
    for (size_t begin = 0; begin < test_order.size(); begin += spec->batch_size()) {
      const size_t end = std::min(test_order.size(), begin + spec->batch_size());
      GatherBatch(data->test,
                  absl::MakeConstSpan(test_order.data() + begin, end - begin),
                  &x, &labels);
      absl::StatusOr<BatchReport> report =
          (*trainer)->Evaluate(++batch_id, x, labels);
      if (!report.ok()) {
        std::fprintf(stderr, "%s\n", report.status().ToString().c_str());
        return 1;
      }
      correct += report->correct;
    }
    std::printf("epoch %d: train loss %.4f, test accuracy %.2f %%, %.0f samples/s\n",
                epoch, loss_sum / seen, 100.0 * correct / data->test.size(),
                seen / seconds);
    for (int g = 0; g + 1 < (*trainer)->group_count(); ++g) {
      const GroupStats stats = (*trainer)->group(g).stats();
      std::printf("  group %d: synthetic-gradient loss %.3g, cosine %.3f\n", g,
                  stats.synthetic_gradient_loss,
                  stats.synthetic_gradient_cosine);
    }
    std::fflush(stdout);
  }
  return 0;
}

}  // namespace
}  // namespace synthgrad

int main(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "Trains a job spec in one thread without services.\n"
      "Usage: train_in_process --spec FILE [--mode M] [--epochs N]");
  absl::ParseCommandLine(argc, argv);
  return synthgrad::Run();
}
