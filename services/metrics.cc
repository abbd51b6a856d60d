#include "services/metrics.h"

#include <exception>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "services/server_util.h"

namespace synthgrad {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Lower-case name of a status code, e.g. "invalid_argument".
std::string CodeName(absl::StatusCode code) {
  return absl::AsciiStrToLower(absl::StatusCodeToString(code));
}

const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const auto* const buckets = new prometheus::Histogram::BucketBoundaries{
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
      0.025,  0.05,    0.1,    0.25,  0.5,    1,     2.5};
  return *buckets;
}

}  // namespace

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::Start(
    const std::string& bind_address, int port,
    std::shared_ptr<prometheus::Registry> registry) {
  const std::string address = absl::StrCat(bind_address, ":", port);
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(address, 1);
  } catch (const std::exception& error) {
    return absl::UnavailableError(absl::StrCat(
        "cannot serve metrics on ", address, ": ", error.what(),
        "; the port may be in use"));
  }
  const std::vector<int> ports = exposer->GetListeningPorts();
  if (ports.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot serve metrics on ", address));
  }
  exposer->RegisterCollectable(registry);
  return std::unique_ptr<MetricsServer>(
      new MetricsServer(std::move(exposer), ports[0]));
}

absl::StatusOr<std::unique_ptr<MetricsServer>> MetricsServer::StartUnlessDisabled(
    const std::string& bind_address, int port, const std::string& port_file,
    std::shared_ptr<prometheus::Registry> registry) {
  if (port == -1) return std::unique_ptr<MetricsServer>();
  absl::StatusOr<std::unique_ptr<MetricsServer>> server =
      Start(bind_address, port, std::move(registry));
  if (!server.ok()) return server.status();
  LOG(INFO) << "metrics on http://" << bind_address << ":" << (*server)->port()
            << "/metrics";
  if (!port_file.empty()) {
    absl::Status status = WritePortFile(port_file, (*server)->port());
    if (!status.ok()) return status;
  }
  return server;
}

RpcMetrics::RpcMetrics(prometheus::Registry& registry)
    : latency_(BuildHistogram()
                   .Name("synthgrad_rpc_server_handling_seconds")
                   .Help("Time to handle a gRPC call in seconds, by method and "
                         "status code.")
                   .Register(registry)) {}

void RpcMetrics::Observe(const std::string& method, grpc::StatusCode code,
                         std::chrono::steady_clock::duration latency) {
  latency_
      .Add({{"method", method},
            {"code", CodeName(static_cast<absl::StatusCode>(code))}},
           LatencyBuckets())
      .Observe(std::chrono::duration<double>(latency).count());
}

GroupMetrics::GroupMetrics(prometheus::Registry& registry)
    : forward_batches_(BuildCounter()
                           .Name("synthgrad_group_forward_batches_total")
                           .Help("Batches through the group's forward pass, by "
                                 "mode (train or eval).")
                           .Register(registry)),
      forward_samples_(BuildCounter()
                           .Name("synthgrad_group_forward_samples_total")
                           .Help("Examples through the group's forward pass, "
                                 "by mode (train or eval).")
                           .Register(registry)),
      updates_(BuildCounter()
                   .Name("synthgrad_group_updates_total")
                   .Help("Optimizer steps applied to the group's weights.")
                   .Register(registry)
                   .Add({})),
      step_(BuildGauge()
                .Name("synthgrad_group_step")
                .Help("Optimizer steps since the group was configured.")
                .Register(registry)
                .Add({})),
      gradient_batches_(BuildCounter()
                            .Name("synthgrad_group_gradient_batches_total")
                            .Help("True gradients received from the next group.")
                            .Register(registry)
                            .Add({})),
      staleness_steps_(
          BuildHistogram()
              .Name("synthgrad_group_gradient_staleness_steps")
              .Help("Updates the group made between sending a batch forward "
                    "and receiving its true gradient.")
              .Register(registry)
              .Add({}, prometheus::Histogram::BucketBoundaries{
                           0, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64})),
      staleness_seconds_(
          BuildHistogram()
              .Name("synthgrad_group_gradient_staleness_seconds")
              .Help("Seconds between sending a batch forward and receiving "
                    "its true gradient.")
              .Register(registry)
              .Add({}, LatencyBuckets())),
      synthetic_gradient_loss_(
          BuildGauge()
              .Name("synthgrad_group_synthetic_gradient_loss")
              .Help("L2 loss 0.5 * mean ||M(h) - target||^2 of the "
                    "synthetic-gradient model on its latest batch.")
              .Register(registry)
              .Add({})),
      synthetic_gradient_cosine_(
          BuildGauge()
              .Name("synthgrad_group_synthetic_gradient_cosine")
              .Help("Cosine similarity, in [-1, 1], between the synthetic "
                    "gradient and its bootstrapped target on the latest batch.")
              .Register(registry)
              .Add({})),
      probes_(BuildCounter()
                  .Name("synthgrad_group_exact_gradient_probes_total")
                  .Help("Exact-gradient probes compared with the synthetic "
                        "gradient.")
                  .Register(registry)
                  .Add({})),
      probe_cosine_(BuildGauge()
                        .Name("synthgrad_group_exact_gradient_probe_cosine")
                        .Help("Cosine similarity, in [-1, 1], between the "
                              "synthetic gradient and the exact "
                              "backpropagated gradient at the latest probe.")
                        .Register(registry)
                        .Add({})),
      probe_relative_error_(
          BuildGauge()
              .Name("synthgrad_group_exact_gradient_probe_relative_error_ratio")
              .Help("||M(h) - g|| / ||g|| between synthetic gradient M(h) and "
                    "exact gradient g at the latest probe.")
              .Register(registry)
              .Add({})),
      training_loss_(BuildGauge()
                         .Name("synthgrad_group_training_loss")
                         .Help("Mean cross-entropy in nats of the latest "
                               "training batch (last group only).")
                         .Register(registry)
                         .Add({})),
      cache_evictions_(BuildCounter()
                           .Name("synthgrad_group_cache_evictions_total")
                           .Help("Batches dropped from a full activation cache "
                                 "before their gradient arrived.")
                           .Register(registry)
                           .Add({})),
      rejected_(BuildCounter()
                    .Name("synthgrad_group_rejected_requests_total")
                    .Help("Forward and Gradient requests rejected, by reason "
                          "(gRPC status code name).")
                    .Register(registry)),
      queue_depth_(BuildGauge()
                       .Name("synthgrad_group_queue_depth")
                       .Help("Events waiting for the group's compute thread.")
                       .Register(registry)
                       .Add({})) {
  // Both series exist from the start, so rate() counts from zero.
  for (const char* mode : {"train", "eval"}) {
    forward_batches_.Add({{"mode", mode}});
    forward_samples_.Add({{"mode", mode}});
  }
}

void GroupMetrics::OnForward(bool train, int64_t samples) {
  const std::string mode = train ? "train" : "eval";
  forward_batches_.Add({{"mode", mode}}).Increment();
  forward_samples_.Add({{"mode", mode}}).Increment(static_cast<double>(samples));
}

void GroupMetrics::OnUpdate(int64_t step) {
  updates_.Increment();
  step_.Set(static_cast<double>(step));
}

void GroupMetrics::OnGradient(int64_t staleness_steps, double staleness_seconds) {
  gradient_batches_.Increment();
  staleness_steps_.Observe(static_cast<double>(staleness_steps));
  staleness_seconds_.Observe(staleness_seconds);
}

void GroupMetrics::OnSyntheticGradientTrained(double loss, double cosine) {
  synthetic_gradient_loss_.Set(loss);
  synthetic_gradient_cosine_.Set(cosine);
}

void GroupMetrics::OnExactGradientProbe(double cosine, double relative_error) {
  probes_.Increment();
  probe_cosine_.Set(cosine);
  probe_relative_error_.Set(relative_error);
}

void GroupMetrics::OnTrainingLoss(double loss) { training_loss_.Set(loss); }

void GroupMetrics::OnCacheEviction() { cache_evictions_.Increment(); }

void GroupMetrics::OnRejected(absl::StatusCode code) {
  rejected_.Add({{"reason", CodeName(code)}}).Increment();
}

void GroupMetrics::OnQueueDepth(int depth) { queue_depth_.Set(depth); }

CoordinatorMetrics::CoordinatorMetrics(prometheus::Registry& registry)
    : samples_(BuildCounter()
                   .Name("synthgrad_coordinator_training_samples_total")
                   .Help("Training examples whose result came back from the "
                         "last group.")
                   .Register(registry)
                   .Add({})),
      samples_per_second_(BuildGauge()
                              .Name("synthgrad_coordinator_training_samples_per_second")
                              .Help("Training examples per second over the "
                                    "last 5 seconds.")
                              .Register(registry)
                              .Add({})),
      epoch_(BuildGauge()
                 .Name("synthgrad_coordinator_epoch")
                 .Help("Epoch in progress, from 1; 0 before the first.")
                 .Register(registry)
                 .Add({})),
      eval_accuracy_(BuildGauge()
                         .Name("synthgrad_coordinator_eval_accuracy_ratio")
                         .Help("Test accuracy in [0, 1] after the latest epoch.")
                         .Register(registry)
                         .Add({})),
      eval_loss_(BuildGauge()
                     .Name("synthgrad_coordinator_eval_loss")
                     .Help("Mean test cross-entropy in nats after the latest "
                           "epoch.")
                     .Register(registry)
                     .Add({})),
      in_flight_(BuildGauge()
                     .Name("synthgrad_coordinator_batches_in_flight")
                     .Help("Batches sent to the first group whose result has "
                           "not come back.")
                     .Register(registry)
                     .Add({})),
      job_state_(BuildGauge()
                     .Name("synthgrad_coordinator_job_state")
                     .Help("1 for the latest job's state, 0 for the others.")
                     .Register(registry)),
      batches_fed_(BuildCounter()
                       .Name("synthgrad_coordinator_training_batches_fed_total")
                       .Help("Training batches sent to the first group, "
                             "including batches fed again after a recovery.")
                       .Register(registry)
                       .Add({})),
      batches_refed_(BuildCounter()
                         .Name("synthgrad_coordinator_training_batches_refed_total")
                         .Help("Training batches sent again because a "
                               "recovery rolled the job back past them.")
                         .Register(registry)
                         .Add({})),
      recoveries_(BuildCounter()
                      .Name("synthgrad_coordinator_recoveries_total")
                      .Help("Recoveries from a group that went down.")
                      .Register(registry)
                      .Add({})),
      checkpoints_(BuildCounter()
                       .Name("synthgrad_coordinator_checkpoints_total")
                       .Help("Checkpoints that every group and the "
                             "coordinator wrote.")
                       .Register(registry)
                       .Add({})),
      checkpoint_failures_(BuildCounter()
                               .Name("synthgrad_coordinator_checkpoint_failures_total")
                               .Help("Checkpoints abandoned because a group "
                                     "or the coordinator could not write "
                                     "its part.")
                               .Register(registry)
                               .Add({})),
      checkpoint_seconds_(BuildGauge()
                              .Name("synthgrad_coordinator_last_checkpoint_seconds")
                              .Help("Duration of the latest checkpoint, from "
                                    "draining the batches in flight to the "
                                    "coordinator's file, in seconds.")
                              .Register(registry)
                              .Add({})) {
  SetJobState(v1::JOB_STATE_UNSPECIFIED);
}

void CoordinatorMetrics::SetEvaluation(double accuracy, double loss) {
  eval_accuracy_.Set(accuracy);
  eval_loss_.Set(loss);
}

void CoordinatorMetrics::SetJobState(v1::JobState state) {
  for (int s = v1::JobState_MIN; s <= v1::JobState_MAX; ++s) {
    if (!v1::JobState_IsValid(s)) continue;
    // "JOB_STATE_TRAINING" becomes "training".
    const std::string name =
        absl::AsciiStrToLower(v1::JobState_Name(s).substr(10));
    job_state_.Add({{"state", name}}).Set(s == state ? 1.0 : 0.0);
  }
}

}  // namespace synthgrad
