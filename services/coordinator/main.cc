// synthgrad_coordinator: loads the data, configures the layer groups and runs
// training jobs started by synthgradctl.
#include <optional>
#include <string>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "services/coordinator/coordinator_service.h"
#include "services/flags_util.h"
#include "services/metrics.h"
#include "services/server_util.h"
#include "services/tls.h"

ABSL_FLAG(std::string, bind_address, "127.0.0.1",
          "IP address the gRPC server listens on; 0.0.0.0 for every "
          "interface.");
ABSL_FLAG(int, port, 50050,
          "TCP port of the gRPC server; 0 picks a free port (see "
          "--port_file).");
ABSL_FLAG(std::string, metrics_bind_address, "127.0.0.1",
          "IP address of the Prometheus /metrics HTTP endpoint; 0.0.0.0 for "
          "every interface.");
ABSL_FLAG(int, metrics_port, 9400,
          "TCP port of the Prometheus /metrics HTTP endpoint; 0 picks a free "
          "port (see --metrics_port_file); -1 disables the endpoint.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the bound metrics port is written to this file.");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port number is written to this file once the "
          "server accepts calls.");
ABSL_FLAG(std::string, advertise_address, "",
          "gRPC target the layer groups use to reach this coordinator (the "
          "last group reports batch results there). Empty means "
          "BIND_ADDRESS:PORT, or 127.0.0.1:PORT when binding 0.0.0.0.");

ABSL_FLAG(std::string, checkpoint_dir, "",
          "Folder for the coordinator's part of each checkpoint (the job's "
          "cursor), created if missing. Needed to resume a job after the "
          "coordinator restarts (StartJob with resume). Empty keeps "
          "checkpoints in memory only, which still covers a group's crash.");

int main(int argc, char** argv) {
  synthgrad::BlockShutdownSignals();
  synthgrad::InitProgram(
      argc, argv,
      "Runs synthgrad training jobs (synthgrad.v1.CoordinatorService).\n"
      "Usage: synthgrad_coordinator [--bind_address=IP] [--port=N] "
      "[--port_file=PATH] [--metrics_port=N] [--advertise_address=HOST:PORT] "
      "[--checkpoint_dir=DIR]");

  if (absl::Status tls = synthgrad::ConfigureTlsFromFlags(
          synthgrad::TlsRole::kServer);
      !tls.ok()) {
    LOG(ERROR) << tls.message();
    return 1;
  }

  const std::string bind_address = absl::GetFlag(FLAGS_bind_address);
  // Metrics first: a taken metrics port is reported before gRPC starts.
  auto registry = std::make_shared<prometheus::Registry>();
  absl::StatusOr<std::unique_ptr<synthgrad::MetricsServer>> metrics =
      synthgrad::MetricsServer::StartUnlessDisabled(
          absl::GetFlag(FLAGS_metrics_bind_address),
          absl::GetFlag(FLAGS_metrics_port),
          absl::GetFlag(FLAGS_metrics_port_file), registry);
  if (!metrics.ok()) {
    LOG(ERROR) << metrics.status().message();
    return 1;
  }

  std::optional<synthgrad::CheckpointDirectory> checkpoint_directory;
  if (!absl::GetFlag(FLAGS_checkpoint_dir).empty()) {
    absl::StatusOr<synthgrad::CheckpointDirectory> directory =
        synthgrad::CheckpointDirectory::Open(absl::GetFlag(FLAGS_checkpoint_dir));
    if (!directory.ok()) {
      LOG(ERROR) << "--checkpoint_dir: " << directory.status().message();
      return 1;
    }
    LOG(INFO) << "checkpoints go to " << directory->root();
    checkpoint_directory = *std::move(directory);
  }
  synthgrad::CoordinatorServiceImpl service(*registry,
                                            std::move(checkpoint_directory));
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = synthgrad::StartServer(
      bind_address, absl::GetFlag(FLAGS_port), {&service}, &port);
  if (!server.ok()) {
    LOG(ERROR) << server.status().message();
    return 1;
  }

  std::string advertise = absl::GetFlag(FLAGS_advertise_address);
  if (advertise.empty()) {
    advertise = absl::StrCat(
        bind_address == "0.0.0.0" ? std::string("127.0.0.1") : bind_address,
        ":", port);
  }
  service.SetAdvertiseAddress(advertise);
  LOG(INFO) << "synthgrad_coordinator listening on " << bind_address << ":"
            << port << ", advertised to groups as " << advertise;
  if (!absl::GetFlag(FLAGS_port_file).empty()) {
    absl::Status status =
        synthgrad::WritePortFile(absl::GetFlag(FLAGS_port_file), port);
    if (!status.ok()) {
      LOG(ERROR) << status.message();
      return 1;
    }
  }

  const int signal_number = synthgrad::WaitForShutdownSignal();
  LOG(INFO) << "signal " << signal_number << " received; shutting down";
  // The job drains its batches for a final checkpoint while the server
  // still takes ReportBatch.
  service.Shutdown();
  (*server)->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  LOG(INFO) << "synthgrad_coordinator stopped";
  return 0;
}
