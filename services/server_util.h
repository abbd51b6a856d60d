// Helpers shared by the synthgrad servers and clients: status conversion,
// channel construction, server start-up and signal handling.
#ifndef SYNTHGRAD_SERVICES_SERVER_UTIL_H_
#define SYNTHGRAD_SERVICES_SERVER_UTIL_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace synthgrad {

// Largest gRPC message any synthgrad process sends or accepts: a batch of
// kMaxBatchSize rows of 784 floats is about 25 MiB.
inline constexpr int kMaxMessageBytes = 64 << 20;

// The one place where an absl::Status becomes a grpc::Status; the codes are
// numerically equal.
grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

// Client keepalive pings: every kKeepaliveTimeMs on an idle-but-open call,
// failing the connection after kKeepaliveTimeoutMs without a reply.
// Servers accept pings down to kMinPingIntervalMs apart, below the client's
// interval, so they never reject a client's pings as abuse.
inline constexpr int kKeepaliveTimeMs = 30'000;
inline constexpr int kKeepaliveTimeoutMs = 10'000;
inline constexpr int kMinPingIntervalMs = 20'000;
// Servers close a connection to new calls after this long (calls in
// progress finish), so clients resolve DNS again and spread over pods.
inline constexpr int kMaxConnectionAgeMs = 300'000;

// Creates a channel to `target` (for example "host:port" or
// "dns:///name:port") with round-robin load balancing over the resolved
// addresses, the keepalive settings above and kMaxMessageBytes. The channel
// uses TLS as the process-wide configuration of services/tls.h sets, and is
// plaintext without one.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& target);

// Starts a server on `bind_address`:`port` (port 0 picks a free port) with
// `services`, the gRPC health service (reporting SERVING) and server
// reflection, and stores the bound port in `bound_port`. The port uses TLS
// as the process-wide configuration of services/tls.h sets. Port reuse is off,
// so a port that another process is bound to fails here. Fails with
// UNAVAILABLE naming the address when it cannot listen, for example because
// the port is taken.
absl::StatusOr<std::unique_ptr<grpc::Server>> StartServer(
    const std::string& bind_address, int port,
    const std::vector<grpc::Service*>& services, int* bound_port);

// Writes `port` to `path` atomically (temporary file, then rename), so a
// script polling for the file never reads a partial number.
absl::Status WritePortFile(const std::string& path, int port);

// Blocks SIGINT and SIGTERM in the calling thread and the threads it starts
// later. Call first thing in main.
void BlockShutdownSignals();

// Waits until SIGINT or SIGTERM arrives and returns its number.
int WaitForShutdownSignal();

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_SERVER_UTIL_H_
