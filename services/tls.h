// Optional TLS and mutual TLS (mTLS) for every gRPC channel and server of a
// synthgrad process. main() loads the --tls_* flags once with
// ConfigureTlsFromFlags. MakeChannel and StartServer (services/server_util.h)
// then read the stored configuration. Without any --tls_* flag, or before
// the call, channels and servers are plaintext.
#ifndef SYNTHGRAD_SERVICES_TLS_H_
#define SYNTHGRAD_SERVICES_TLS_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpcpp/grpcpp.h"

namespace synthgrad {

// TLS settings of one process, with the PEM contents of the files the flags
// name. The default value is plaintext.
struct TlsConfig {
  bool enabled = false;
  // Certificate chain and private key of this process. The same pair serves
  // the server role and the client role. Both are empty for a client-only
  // process without a client certificate.
  std::string certificate_chain_pem;
  std::string private_key_pem;
  // CA certificates that verify peers. Empty means gRPC's default roots.
  std::string root_certificates_pem;
  // Servers reject clients without a certificate that the CA bundle verifies.
  bool require_client_certificate = false;
  // Host name checked against the server certificate in place of the
  // target's host, for example when targets are IP addresses. Empty means
  // the target's host.
  std::string target_name_override;
};

// kServer: a process that serves gRPC and also calls other servers
// (synthgrad_layer, synthgrad_coordinator). kClient: a process that only
// calls servers (synthgradctl).
enum class TlsRole { kServer, kClient };

// Reads the --tls_* flags and the files they name, and checks them: files
// exist and contain PEM, the key matches the certificate, a server has a
// certificate, and mTLS has a CA bundle. Each error names the flag or file
// and the fix.
absl::StatusOr<TlsConfig> LoadTlsConfigFromFlags(TlsRole role);

// Stores `config` for MakeChannel and StartServer. Call before the first
// channel or server is made, because existing ones keep their credentials.
void SetTlsConfig(TlsConfig config);

// Returns the stored configuration (plaintext until SetTlsConfig is called).
std::shared_ptr<const TlsConfig> GetTlsConfig();

// Loads the flags with LoadTlsConfigFromFlags, stores the result with
// SetTlsConfig and logs whether TLS and client-certificate checks are on.
// Logs file paths, never key material.
absl::Status ConfigureTlsFromFlags(TlsRole role);

// Credentials for a channel or a listening port under `config`.
std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsConfig& config);
std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsConfig& config);

}  // namespace synthgrad

#endif  // SYNTHGRAD_SERVICES_TLS_H_
