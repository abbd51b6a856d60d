// synthgrad_layer: serves one layer group. The layers it runs come from the
// job spec in the coordinator's Configure call, so one binary serves every
// stage.
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "glog/logging.h"
#include "common/checkpoint.h"
#include "services/flags_util.h"
#include "services/layer/layer_service.h"
#include "services/layer/recurrent_group.h"
#include "services/metrics.h"
#include "services/server_util.h"
#include "services/tls.h"

ABSL_FLAG(std::string, bind_address, "127.0.0.1",
          "IP address the gRPC server listens on; 0.0.0.0 for every "
          "interface.");
ABSL_FLAG(int, port, 50051,
          "TCP port of the gRPC server; 0 picks a free port (see "
          "--port_file).");
ABSL_FLAG(std::string, metrics_bind_address, "127.0.0.1",
          "IP address of the Prometheus /metrics HTTP endpoint; 0.0.0.0 for "
          "every interface.");
ABSL_FLAG(int, metrics_port, 9401,
          "TCP port of the Prometheus /metrics HTTP endpoint; 0 picks a free "
          "port (see --metrics_port_file); -1 disables the endpoint.");
ABSL_FLAG(std::string, metrics_port_file, "",
          "If set, the bound metrics port is written to this file.");
ABSL_FLAG(double, link_latency_ms, 0.0,
          "Milliseconds added before every Forward and Gradient this group "
          "sends to a neighbouring group, to emulate a slower link in "
          "experiments. 0 in normal use.");
ABSL_FLAG(std::string, checkpoint_dir, "",
          "Folder for this group's checkpoints, created if missing. Every "
          "checkpoint path lies inside it; the coordinator only sends "
          "checkpoint ids. Empty disables checkpoints and restores.");
ABSL_FLAG(std::string, port_file, "",
          "If set, the bound port number is written to this file once the "
          "server accepts calls.");

int main(int argc, char** argv) {
  synthgrad::BlockShutdownSignals();
  synthgrad::InitProgram(
      argc, argv,
      "Serves one synthgrad layer group over gRPC (synthgrad.v1.LayerService\n"
      "and, for recurrent jobs, synthgrad.v1.RecurrentGroupService).\n"
      "Usage: synthgrad_layer [--bind_address=IP] [--port=N] "
      "[--port_file=PATH] [--metrics_port=N] [--checkpoint_dir=DIR]");

  if (absl::Status tls = synthgrad::ConfigureTlsFromFlags(
          synthgrad::TlsRole::kServer);
      !tls.ok()) {
    LOG(ERROR) << tls.message();
    return 1;
  }

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

  const double link_latency_ms = absl::GetFlag(FLAGS_link_latency_ms);
  if (!(link_latency_ms >= 0.0 && link_latency_ms <= 60'000.0)) {
    LOG(ERROR) << "--link_latency_ms must be in [0, 60000], got "
               << link_latency_ms;
    return 2;
  }
  synthgrad::LayerServiceOptions options;
  options.link_latency = std::chrono::microseconds(
      static_cast<int64_t>(link_latency_ms * 1000.0));
  if (!absl::GetFlag(FLAGS_checkpoint_dir).empty()) {
    absl::StatusOr<synthgrad::CheckpointDirectory> directory =
        synthgrad::CheckpointDirectory::Open(absl::GetFlag(FLAGS_checkpoint_dir));
    if (!directory.ok()) {
      LOG(ERROR) << "--checkpoint_dir: " << directory.status().message();
      return 1;
    }
    LOG(INFO) << "checkpoints go to " << directory->root();
    options.checkpoint_directory = *std::move(directory);
  }
  synthgrad::LayerServiceImpl service(*registry, options);
  synthgrad::RecurrentGroupServiceImpl recurrent_service;
  int port = 0;
  absl::StatusOr<std::unique_ptr<grpc::Server>> server = synthgrad::StartServer(
      absl::GetFlag(FLAGS_bind_address), absl::GetFlag(FLAGS_port),
      {&service, &recurrent_service}, &port);
  if (!server.ok()) {
    LOG(ERROR) << server.status().message();
    return 1;
  }
  LOG(INFO) << "synthgrad_layer listening on "
            << absl::GetFlag(FLAGS_bind_address) << ":" << port;
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
  (*server)->Shutdown(std::chrono::system_clock::now() +
                      std::chrono::seconds(2));
  LOG(INFO) << "synthgrad_layer stopped";
  return 0;
}
