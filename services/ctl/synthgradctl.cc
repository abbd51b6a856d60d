// synthgradctl: the command-line client of synthgrad. Starts a job from a
// spec file and follows it, prints the status of a job and its groups, and
// stops a job.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/job_spec.h"
#include "google/protobuf/util/json_util.h"
#include "services/flags_util.h"
#include "services/server_util.h"
#include "services/tls.h"
#include "synthgrad/v1/synthgrad.grpc.pb.h"

ABSL_FLAG(std::string, coordinator, "127.0.0.1:50050",
          "gRPC target of synthgrad_coordinator (all commands).");
ABSL_FLAG(std::string, spec, "",
          "train: job spec file in Protobuf text format (synthgrad.v1.JobSpec).");
ABSL_FLAG(std::string, group_addresses, "",
          "train: comma-separated gRPC targets that replace the spec's group "
          "addresses, one per group in order.");
ABSL_FLAG(std::string, mode, "",
          "train: replaces the spec's mode: backprop, dni or cdni.");
ABSL_FLAG(int, epochs, 0, "train: replaces the spec's epoch count when > 0.");
ABSL_FLAG(int, train_limit, -1,
          "train: replaces data.train_limit (examples; 0 means all) when >= 0.");
ABSL_FLAG(int, test_limit, -1,
          "train: replaces data.test_limit (examples; 0 means all) when >= 0.");
ABSL_FLAG(std::string, data_dir, "", "train: replaces data.dir when set.");
ABSL_FLAG(int, exact_gradient_probe_interval, -1,
          "train: replaces exact_gradient_probe_interval (training batches "
          "between exact-gradient probes; 0 disables them) when >= 0.");
ABSL_FLAG(int, checkpoint_interval_shards, -1,
          "train: replaces checkpoint_interval_shards (shards between "
          "checkpoints; 0 disables them) when >= 0.");
ABSL_FLAG(bool, resume, false,
          "train: continue the job with this spec from the latest checkpoint "
          "in the coordinator's --checkpoint_dir instead of starting afresh.");
ABSL_FLAG(std::string, summary_out, "",
          "train: writes the final job status as JSON to this file.");
ABSL_FLAG(std::string, job_id, "",
          "status, stop: job to act on; empty means the latest job.");

namespace synthgrad {
namespace {

constexpr char kUsage[] =
    "Command-line client of synthgrad.\n"
    "Usage:\n"
    "  synthgradctl train --spec=FILE [--coordinator=HOST:PORT] "
    "[--group_addresses=A,B,C] [--resume]\n"
    "      Starts a job, or resumes it from its latest checkpoint, and follows it: a progress bar on stderr, one line per "
    "epoch on stdout.\n"
    "      Exits 0 when the job succeeds, 1 when it fails or stops, 2 for "
    "bad input.\n"
    "  synthgradctl validate --spec=FILE [train flags]\n"
    "      Checks the spec with the train flags applied, without contacting "
    "any server, and prints its group count.\n"
    "  synthgradctl status [--coordinator=HOST:PORT] [--job_id=ID]\n"
    "      Prints the job's state and a table of its groups.\n"
    "  synthgradctl stop [--coordinator=HOST:PORT] [--job_id=ID]\n"
    "      Stops the job.\n"
    "train, status and stop use TLS when --tls_ca_file or --tls_cert_file is "
    "set (see the --tls_* flags).";

std::atomic<bool> interrupted{false};

void Fail(const std::string& message) {
  std::fprintf(stderr, "synthgradctl: %s\n", message.c_str());
}

std::string FormatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t total = static_cast<int64_t>(seconds + 0.5);
  if (total >= 3600) {
    return absl::StrFormat("%d:%02d:%02d", total / 3600, total / 60 % 60,
                           total % 60);
  }
  return absl::StrFormat("%02d:%02d", total / 60, total % 60);
}

// Reads the spec and applies the command-line replacements.
absl::StatusOr<v1::JobSpec> LoadSpec() {
  const std::string path = absl::GetFlag(FLAGS_spec);
  if (path.empty()) {
    return absl::InvalidArgumentError("--spec is required for train");
  }
  std::ifstream file(path);
  if (!file) {
    return absl::NotFoundError(
        absl::StrCat("spec file ", path, " not found or not readable"));
  }
  std::stringstream text;
  text << file.rdbuf();
  absl::StatusOr<v1::JobSpec> spec = ParseJobSpec(text.str());
  if (!spec.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": ", spec.status().message()));
  }

  const std::string addresses = absl::GetFlag(FLAGS_group_addresses);
  if (!addresses.empty()) {
    std::vector<std::string> parts = absl::StrSplit(addresses, ',');
    for (std::string& part : parts) {
      part = std::string(absl::StripAsciiWhitespace(part));
      if (part.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "--group_addresses=", addresses, " has an empty address"));
      }
    }
    if (static_cast<int>(parts.size()) != spec->groups_size()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "--group_addresses lists ", parts.size(), " addresses but ", path,
          " has ", spec->groups_size(), " groups"));
    }
    for (size_t i = 0; i < parts.size(); ++i) {
      spec->mutable_groups(i)->set_address(parts[i]);
    }
  }
  const std::string mode = absl::GetFlag(FLAGS_mode);
  if (mode == "backprop") {
    spec->set_mode(v1::TRAINING_MODE_BACKPROP);
  } else if (mode == "dni") {
    spec->set_mode(v1::TRAINING_MODE_DNI);
  } else if (mode == "cdni") {
    spec->set_mode(v1::TRAINING_MODE_CDNI);
  } else if (!mode.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--mode=", mode, " is not one of backprop, dni, cdni"));
  }
  if (absl::GetFlag(FLAGS_epochs) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--epochs=", absl::GetFlag(FLAGS_epochs), " is negative; use a positive "
        "count, or 0 to keep the spec's"));
  }
  if (absl::GetFlag(FLAGS_epochs) > 0) spec->set_epochs(absl::GetFlag(FLAGS_epochs));
  if (absl::GetFlag(FLAGS_train_limit) >= 0) {
    spec->mutable_data()->set_train_limit(absl::GetFlag(FLAGS_train_limit));
  }
  if (absl::GetFlag(FLAGS_test_limit) >= 0) {
    spec->mutable_data()->set_test_limit(absl::GetFlag(FLAGS_test_limit));
  }
  if (absl::GetFlag(FLAGS_exact_gradient_probe_interval) >= 0) {
    spec->set_exact_gradient_probe_interval(
        absl::GetFlag(FLAGS_exact_gradient_probe_interval));
  }
  if (!absl::GetFlag(FLAGS_data_dir).empty()) {
    spec->mutable_data()->set_dir(absl::GetFlag(FLAGS_data_dir));
  }
  if (absl::GetFlag(FLAGS_checkpoint_interval_shards) >= 0) {
    spec->set_checkpoint_interval_shards(
        absl::GetFlag(FLAGS_checkpoint_interval_shards));
  }
  return spec;
}

// Draws the progress line on stderr: a bar over all epochs, samples/s, ETA.
// On a terminal the line is redrawn in place; otherwise a line is printed at
// most every 10 seconds.
class ProgressPrinter {
 public:
  ProgressPrinter() : terminal_(isatty(STDERR_FILENO) != 0) {}

  void Update(const v1::JobStatus& status) {
    const double fraction =
        status.samples_total() > 0
            ? static_cast<double>(status.samples_done()) / status.samples_total()
            : 0.0;
    const double rate = status.samples_per_second();
    const double eta =
        rate > 0 ? (status.samples_total() - status.samples_done()) / rate : NAN;
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(fraction * kWidth);
    const std::string line = absl::StrFormat(
        "epoch %d/%d [%s%s] %5.1f%% %8.0f samples/s  elapsed %s  ETA %s  %s",
        status.epoch(), status.epochs(), std::string(filled, '#'),
        std::string(kWidth - filled, '.'), 100.0 * fraction, rate,
        FormatDuration(status.elapsed_seconds()), FormatDuration(eta),
        v1::JobState_Name(status.state()).substr(10) +
            ((status.state() == v1::JOB_STATE_STARTING ||
              status.state() == v1::JOB_STATE_RECOVERING) &&
                     !status.message().empty()
                 ? ": " + status.message()
                 : ""));
    if (terminal_) {
      std::fprintf(stderr, "\r%s\033[K", line.c_str());
      drawn_ = true;
    } else if (status.elapsed_seconds() - last_print_ >= 10.0) {
      std::fprintf(stderr, "%s\n", line.c_str());
      last_print_ = status.elapsed_seconds();
    }
  }

  // Ends the redrawn line before other output.
  void Break() {
    if (drawn_) std::fprintf(stderr, "\n");
    drawn_ = false;
  }

 private:
  const bool terminal_;
  bool drawn_ = false;
  double last_print_ = -1e9;
};

int Train() {
  absl::StatusOr<v1::JobSpec> spec = LoadSpec();
  if (!spec.ok()) {
    Fail(std::string(spec.status().message()));
    return 2;
  }
  auto stub = v1::CoordinatorService::NewStub(
      MakeChannel(absl::GetFlag(FLAGS_coordinator)));

  v1::StartJobRequest start;
  *start.mutable_spec() = *spec;
  start.set_resume(absl::GetFlag(FLAGS_resume));
  v1::StartJobResponse started;
  {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(120));
    const grpc::Status status = stub->StartJob(&context, start, &started);
    if (!status.ok()) {
      Fail(absl::StrCat(
          "StartJob at ", absl::GetFlag(FLAGS_coordinator), " failed: ",
          status.error_message(),
          status.error_code() == grpc::StatusCode::UNAVAILABLE
              ? "; is synthgrad_coordinator running there, and do its TLS "
                "settings match this client's? (see --coordinator and "
                "docs/security.md)"
              : ""));
      return status.error_code() == grpc::StatusCode::INVALID_ARGUMENT ? 2 : 1;
    }
  }
  std::printf("job %s: %s, %d groups, %lld training and %lld test examples, "
              "%d epoch(s)\n",
              started.job_id().c_str(),
              v1::TrainingMode_Name(spec->mode()).c_str(), spec->groups_size(),
              static_cast<long long>(started.train_examples()),
              static_cast<long long>(started.test_examples()), spec->epochs());
  std::fflush(stdout);

  // Ctrl-C stops the job on the coordinator before the client exits.
  std::signal(SIGINT, [](int) { interrupted = true; });
  std::signal(SIGTERM, [](int) { interrupted = true; });

  grpc::ClientContext watch_context;
  v1::WatchJobRequest watch;
  watch.set_job_id(started.job_id());
  std::unique_ptr<grpc::ClientReader<v1::JobStatus>> reader =
      stub->WatchJob(&watch_context, watch);
  std::thread canceller([&] {
    while (!interrupted) {
      if (reader == nullptr) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    watch_context.TryCancel();
  });

  ProgressPrinter progress;
  v1::JobStatus status;
  v1::JobStatus last;
  int epochs_printed = 0;
  int recoveries_printed = 0;
  while (reader->Read(&status)) {
    last = status;
    if (status.recoveries() > recoveries_printed) {
      recoveries_printed = status.recoveries();
      progress.Break();
      std::printf("recovery %d: %s\n", status.recoveries(),
                  status.message().empty() ? "done"
                                           : status.message().c_str());
      std::fflush(stdout);
    }
    // A recovery without checkpoints rolls back finished epochs; they are
    // printed again when they finish again.
    epochs_printed = std::min(epochs_printed, status.epochs_done_size());
    for (; epochs_printed < status.epochs_done_size(); ++epochs_printed) {
      const v1::EpochResult& epoch = status.epochs_done(epochs_printed);
      progress.Break();
      std::printf("epoch %d/%d: train loss %.4f, train accuracy %.2f %%, "
                  "test loss %.4f, test accuracy %.2f %%, %.1f s\n",
                  epoch.epoch(), status.epochs(), epoch.train_loss(),
                  100.0 * epoch.train_accuracy(), epoch.test_loss(),
                  100.0 * epoch.test_accuracy(), epoch.seconds());
      std::fflush(stdout);
    }
    progress.Update(status);
  }
  const grpc::Status finish = reader->Finish();
  interrupted = true;
  canceller.join();
  progress.Break();

  if (finish.error_code() == grpc::StatusCode::CANCELLED) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    v1::StopJobRequest stop;
    stop.set_job_id(started.job_id());
    v1::StopJobResponse stopped;
    const grpc::Status status = stub->StopJob(&context, stop, &stopped);
    if (status.ok()) {
      Fail(absl::StrCat("interrupted; job ", started.job_id(), " stopped"));
    } else if (status.error_code() == grpc::StatusCode::UNAVAILABLE) {
      Fail(absl::StrCat("interrupted; the coordinator at ",
                        absl::GetFlag(FLAGS_coordinator),
                        " is no longer reachable, so job ", started.job_id(),
                        " ended with it"));
    } else {
      Fail(absl::StrCat("interrupted; stopping job ", started.job_id(),
                        " failed: ", status.error_message()));
    }
    return 1;
  }
  if (!finish.ok()) {
    Fail(absl::StrCat("lost the job's progress stream: ",
                      finish.error_message()));
    return 1;
  }

  if (!absl::GetFlag(FLAGS_summary_out).empty()) {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.always_print_primitive_fields = true;
    (void)google::protobuf::util::MessageToJsonString(last, &json, options);
    std::ofstream out(absl::GetFlag(FLAGS_summary_out));
    out << json;
    if (!out.flush()) {
      Fail(absl::StrCat("cannot write --summary_out=",
                        absl::GetFlag(FLAGS_summary_out)));
      return 1;
    }
  }

  if (last.state() != v1::JOB_STATE_SUCCEEDED) {
    Fail(absl::StrCat("job ", last.job_id(), " ended ",
                      v1::JobState_Name(last.state()), ": ", last.message()));
    return 1;
  }
  const v1::EpochResult& final_epoch =
      last.epochs_done(last.epochs_done_size() - 1);
  std::printf("job %s succeeded: final test accuracy %.2f %%, %.0f s\n",
              last.job_id().c_str(), 100.0 * final_epoch.test_accuracy(),
              last.elapsed_seconds());
  if (last.recoveries() > 0) {
    std::printf("%d recoveries; %lld training batches fed, %lld of them again "
                "after a roll-back\n",
                last.recoveries(), static_cast<long long>(last.batches_fed()),
                static_cast<long long>(last.batches_refed()));
  }
  return 0;
}

int Validate() {
  absl::StatusOr<v1::JobSpec> spec = LoadSpec();
  if (!spec.ok()) {
    Fail(std::string(spec.status().message()));
    return 2;
  }
  ApplyJobDefaults(&*spec);
  const absl::Status status = ValidateJobSpec(*spec);
  if (!status.ok()) {
    Fail(absl::StrCat(absl::GetFlag(FLAGS_spec), ": ", status.message()));
    return 2;
  }
  std::printf("groups: %d\n", spec->groups_size());
  return 0;
}

int Status() {
  auto stub = v1::CoordinatorService::NewStub(
      MakeChannel(absl::GetFlag(FLAGS_coordinator)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::GetJobStatusRequest request;
  request.set_job_id(absl::GetFlag(FLAGS_job_id));
  v1::JobStatus job;
  const grpc::Status status = stub->GetJobStatus(&context, request, &job);
  if (!status.ok()) {
    Fail(absl::StrCat("GetJobStatus at ", absl::GetFlag(FLAGS_coordinator),
                      " failed: ", status.error_message()));
    return 1;
  }
  std::printf("job %s: %s, %s, epoch %d/%d, %lld/%lld samples, %.0f "
              "samples/s, %.0f s elapsed\n",
              job.job_id().c_str(), v1::JobState_Name(job.state()).c_str(),
              v1::TrainingMode_Name(job.mode()).c_str(), job.epoch(),
              job.epochs(), static_cast<long long>(job.samples_done()),
              static_cast<long long>(job.samples_total()),
              job.samples_per_second(), job.elapsed_seconds());
  if (!job.message().empty()) std::printf("message: %s\n", job.message().c_str());
  std::printf("checkpoint %lld, %d recoveries, %lld training batches fed "
              "(%lld again after a roll-back), %lld shards completed\n",
              static_cast<long long>(job.checkpoint_id()), job.recoveries(),
              static_cast<long long>(job.batches_fed()),
              static_cast<long long>(job.batches_refed()),
              static_cast<long long>(job.shards_completed()));
  for (const v1::EpochResult& epoch : job.epochs_done()) {
    std::printf("  epoch %d: train loss %.4f, test accuracy %.2f %%\n",
                epoch.epoch(), epoch.train_loss(), 100.0 * epoch.test_accuracy());
  }

  // Two reads of each group one second apart give its samples per second.
  // Staleness is in updates. sg_cosine is a moving average, and probe_cos is
  // the latest exact-gradient probe. "-" marks a value that does not apply,
  // because the last group has no synthetic-gradient model.
  std::vector<std::unique_ptr<v1::LayerService::Stub>> stubs;
  std::vector<v1::GroupStatus> first(job.group_addresses_size());
  std::vector<grpc::Status> reachable(job.group_addresses_size());
  auto read_group = [&](int i, v1::GroupStatus* out) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(5));
    return stubs[i]->GetStatus(&context, v1::GetStatusRequest(), out);
  };
  for (int i = 0; i < job.group_addresses_size(); ++i) {
    stubs.push_back(v1::LayerService::NewStub(MakeChannel(job.group_addresses(i))));
    reachable[i] = read_group(i, &first[i]);
  }
  const auto first_read = std::chrono::steady_clock::now();
  std::this_thread::sleep_for(std::chrono::seconds(1));

  std::printf("%-5s %-22s %8s %10s %10s %9s %9s %9s %9s %9s %8s\n", "group",
              "address", "step", "samples/s", "gradients", "stale_p50",
              "stale_p99", "sg_cosine", "probe_cos", "evictions", "rejected");
  auto number = [](double value, const char* format) {
    return std::isnan(value) ? std::string("-") : absl::StrFormat(format, value);
  };
  for (int i = 0; i < job.group_addresses_size(); ++i) {
    const std::string& address = job.group_addresses(i);
    v1::GroupStatus g;
    grpc::Status group_status = reachable[i];
    if (group_status.ok()) group_status = read_group(i, &g);
    if (!group_status.ok()) {
      std::printf("%-5d %-22s unreachable: %s\n", i, address.c_str(),
                  group_status.error_message().c_str());
      continue;
    }
    const double seconds = std::chrono::duration<double>(
                               std::chrono::steady_clock::now() - first_read)
                               .count();
    const double rate =
        (g.forward_samples() - first[i].forward_samples()) / seconds;
    std::printf("%-5d %-22s %8lld %10.0f %10lld %9lld %9lld %9s %9s %9lld %8lld\n",
                i, address.c_str(), static_cast<long long>(g.step()), rate,
                static_cast<long long>(g.gradient_batches()),
                static_cast<long long>(g.staleness_steps_p50()),
                static_cast<long long>(g.staleness_steps_p99()),
                number(g.synthetic_gradient_cosine(), "%.3f").c_str(),
                number(g.probe_cosine(), "%.3f").c_str(),
                static_cast<long long>(g.cache_evictions()),
                static_cast<long long>(g.rejected_requests()));
  }
  return 0;
}

int Stop() {
  auto stub = v1::CoordinatorService::NewStub(
      MakeChannel(absl::GetFlag(FLAGS_coordinator)));
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(10));
  v1::StopJobRequest request;
  request.set_job_id(absl::GetFlag(FLAGS_job_id));
  v1::StopJobResponse response;
  const grpc::Status status = stub->StopJob(&context, request, &response);
  if (!status.ok()) {
    Fail(absl::StrCat("StopJob at ", absl::GetFlag(FLAGS_coordinator),
                      " failed: ", status.error_message()));
    return 1;
  }
  std::printf("stop requested\n");
  return 0;
}

}  // namespace
}  // namespace synthgrad

int main(int argc, char** argv) {
  std::vector<char*> args = synthgrad::InitProgram(argc, argv, synthgrad::kUsage);
  if (args.size() != 2) {
    synthgrad::Fail(absl::StrCat("expected one command (train, validate, status or stop), got ",
                                 args.size() - 1, "; see --help"));
    return 2;
  }
  const std::string command = args[1];
  // validate contacts no server, so it needs no certificate files.
  if (command == "train" || command == "status" || command == "stop") {
    const absl::Status tls =
        synthgrad::ConfigureTlsFromFlags(synthgrad::TlsRole::kClient);
    if (!tls.ok()) {
      synthgrad::Fail(std::string(tls.message()));
      return 1;
    }
  }
  if (command == "train") return synthgrad::Train();
  if (command == "validate") return synthgrad::Validate();
  if (command == "status") return synthgrad::Status();
  if (command == "stop") return synthgrad::Stop();
  synthgrad::Fail(absl::StrCat("unknown command '", command,
                               "'; use train, validate, status or stop"));
  return 2;
}
