// Prometheus metrics of the synthgrad processes, defined in this one place.
//
// Names follow Prometheus conventions: base units (seconds, ratios), `_total`
// only on counters, and labels with a small fixed set of values (RPC method,
// status code, batch mode, job state, rejection reason). No batch id or step
// ever becomes a label. Which group a layer process serves is a target label
// added by the scrape configuration, not a metric label.
//
// All classes are thread-safe: prometheus-cpp metrics are.
#ifndef SYNTHGRAD_SERVICES_METRICS_H_
#define SYNTHGRAD_SERVICES_METRICS_H_

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/group.h"
#include "grpcpp/grpcpp.h"
#include "prometheus/counter.h"
#include "prometheus/exposer.h"
#include "prometheus/family.h"
#include "prometheus/gauge.h"
#include "prometheus/histogram.h"
#include "prometheus/registry.h"
#include "synthgrad/v1/synthgrad.pb.h"

namespace synthgrad {

// An HTTP endpoint serving /metrics from one registry.
class MetricsServer {
 public:
  // Listens on `bind_address`:`port`; port 0 picks a free port. Fails with
  // UNAVAILABLE naming the address when the port is taken or invalid.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> Start(
      const std::string& bind_address, int port,
      std::shared_ptr<prometheus::Registry> registry);

  // Start, unless `port` is -1, then writes the bound port to `port_file`
  // when that is not empty and logs the URL. Returns null when disabled.
  static absl::StatusOr<std::unique_ptr<MetricsServer>> StartUnlessDisabled(
      const std::string& bind_address, int port, const std::string& port_file,
      std::shared_ptr<prometheus::Registry> registry);

  int port() const { return port_; }

 private:
  MetricsServer(std::unique_ptr<prometheus::Exposer> exposer, int port)
      : exposer_(std::move(exposer)), port_(port) {}

  std::unique_ptr<prometheus::Exposer> exposer_;
  int port_;
};

// Latency of the RPCs a server handles, by method and status code.
class RpcMetrics {
 public:
  explicit RpcMetrics(prometheus::Registry& registry);

  void Observe(const std::string& method, grpc::StatusCode code,
               std::chrono::steady_clock::duration latency);

  // Runs `handler`, a gRPC method body, and records its latency and status
  // code under `method`.
  template <typename Handler>
  grpc::Status Timed(const char* method, Handler handler) {
    const auto start = std::chrono::steady_clock::now();
    grpc::Status status = handler();
    Observe(method, status.error_code(), std::chrono::steady_clock::now() - start);
    return status;
  }

 private:
  prometheus::Family<prometheus::Histogram>& latency_;
};

// The metrics of one layer-group process, fed by the group's events.
class GroupMetrics final : public GroupObserver {
 public:
  explicit GroupMetrics(prometheus::Registry& registry);

  void OnForward(bool train, int64_t samples) override;
  void OnUpdate(int64_t step) override;
  void OnGradient(int64_t staleness_steps, double staleness_seconds) override;
  void OnSyntheticGradientTrained(double loss, double cosine) override;
  void OnExactGradientProbe(double cosine, double relative_error) override;
  void OnTrainingLoss(double loss) override;
  void OnCacheEviction() override;
  void OnRejected(absl::StatusCode code) override;
  void OnQueueDepth(int depth) override;

  // Sets the step gauge back to 0 for a newly configured group.
  void ResetStep() { step_.Set(0); }

 private:
  // By label mode="train" or "eval".
  prometheus::Family<prometheus::Counter>& forward_batches_;
  prometheus::Family<prometheus::Counter>& forward_samples_;
  prometheus::Counter& updates_;
  prometheus::Gauge& step_;
  prometheus::Counter& gradient_batches_;
  prometheus::Histogram& staleness_steps_;
  prometheus::Histogram& staleness_seconds_;
  prometheus::Gauge& synthetic_gradient_loss_;
  prometheus::Gauge& synthetic_gradient_cosine_;
  prometheus::Counter& probes_;
  prometheus::Gauge& probe_cosine_;
  prometheus::Gauge& probe_relative_error_;
  prometheus::Gauge& training_loss_;
  prometheus::Counter& cache_evictions_;
  prometheus::Family<prometheus::Counter>& rejected_;
  prometheus::Gauge& queue_depth_;
};

// The metrics of the coordinator.
class CoordinatorMetrics {
 public:
  explicit CoordinatorMetrics(prometheus::Registry& registry);

  void AddTrainingSamples(int64_t samples) { samples_.Increment(samples); }
  void SetSamplesPerSecond(double rate) { samples_per_second_.Set(rate); }
  void SetEpoch(int epoch) { epoch_.Set(epoch); }
  void SetEvaluation(double accuracy, double loss);
  void SetBatchesInFlight(int count) { in_flight_.Set(count); }
  // Sets the job-state gauge with label `state` to 1 and the others to 0.
  void SetJobState(v1::JobState state);
  void AddBatchFed(bool refed) {
    batches_fed_.Increment();
    if (refed) batches_refed_.Increment();
  }
  void AddRecovery() { recoveries_.Increment(); }
  void AddCheckpoint(double seconds) {
    checkpoints_.Increment();
    checkpoint_seconds_.Set(seconds);
  }
  void AddCheckpointFailure() { checkpoint_failures_.Increment(); }

 private:
  prometheus::Counter& samples_;
  prometheus::Gauge& samples_per_second_;
  prometheus::Gauge& epoch_;
  prometheus::Gauge& eval_accuracy_;
  prometheus::Gauge& eval_loss_;
  prometheus::Gauge& in_flight_;
  prometheus::Family<prometheus::Gauge>& job_state_;
  prometheus::Counter& batches_fed_;
  prometheus::Counter& batches_refed_;
  prometheus::Counter& recoveries_;
  prometheus::Counter& checkpoints_;
  prometheus::Counter& checkpoint_failures_;
  prometheus::Gauge& checkpoint_seconds_;
};

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_METRICS_H_
