#include "services/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <optional>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"

ABSL_FLAG(std::string, tls_cert_file, "",
          "PEM file with this process's certificate chain, leaf first. "
          "Servers present it to clients, and clients present it to servers "
          "that require a client certificate. Setting --tls_cert_file, "
          "--tls_key_file or --tls_ca_file turns TLS on for every gRPC "
          "channel and server of the process; empty everywhere means "
          "plaintext.");
ABSL_FLAG(std::string, tls_key_file, "",
          "PEM file with the unencrypted private key of --tls_cert_file. "
          "Required together with --tls_cert_file.");
ABSL_FLAG(std::string, tls_ca_file, "",
          "PEM file with the CA certificates that verify peers: the servers "
          "this process calls and, with --tls_require_client_cert, its "
          "clients. Empty means gRPC's default roots (see the environment "
          "variable GRPC_DEFAULT_SSL_ROOTS_FILE_PATH).");
ABSL_FLAG(bool, tls_require_client_cert, false,
          "Servers only: reject every client that presents no certificate "
          "signed by a CA of --tls_ca_file (mutual TLS). Needs "
          "--tls_cert_file, --tls_key_file and --tls_ca_file.");
ABSL_FLAG(std::string, tls_target_name_override, "",
          "Host name that server certificates must match in place of the "
          "host of each target, for targets that are IP addresses or names "
          "missing from the certificate (for example localhost). Applies to "
          "every channel of the process and needs TLS on. Empty means the "
          "target's host.");

namespace synthgrad {
namespace {

using BioPtr = std::unique_ptr<BIO, decltype(&BIO_free)>;
using X509Ptr = std::unique_ptr<X509, decltype(&X509_free)>;
using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using StorePtr = std::unique_ptr<X509_STORE, decltype(&X509_STORE_free)>;
using StoreContextPtr =
    std::unique_ptr<X509_STORE_CTX, decltype(&X509_STORE_CTX_free)>;

// A parsed PEM file: the text for gRPC and the certificates for the checks
// below.
struct CertificateFile {
  std::string pem;
  std::vector<X509Ptr> certificates;
};

// Returns the oldest OpenSSL error as text and clears the error queue.
std::string TakeOpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no detail from OpenSSL";
  char text[256];
  ERR_error_string_n(code, text, sizeof(text));
  return text;
}

absl::StatusOr<std::string> ReadFile(const std::string& flag,
                                     const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::NotFoundError(absl::StrCat(
        "--", flag, "=", path, ": cannot open the file (", std::strerror(errno),
        "); check the path and that this user may read it"));
  }
  std::stringstream contents;
  contents << in.rdbuf();
  if (in.bad()) {
    return absl::DataLossError(
        absl::StrCat("--", flag, "=", path, ": reading the file failed"));
  }
  return contents.str();
}

BioPtr MemoryBio(const std::string& text) {
  return BioPtr(BIO_new_mem_buf(text.data(), static_cast<int>(text.size())),
                &BIO_free);
}

// Reads every PEM certificate of a file; fails when there is none.
absl::StatusOr<CertificateFile> ReadCertificates(const std::string& flag,
                                                 const std::string& path) {
  absl::StatusOr<std::string> pem = ReadFile(flag, path);
  if (!pem.ok()) return pem.status();
  CertificateFile file;
  file.pem = *std::move(pem);
  BioPtr bio = MemoryBio(file.pem);
  while (X509* certificate =
             PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
    file.certificates.emplace_back(certificate, &X509_free);
  }
  // The loop ends with a "no start line" error at the end of the text.
  ERR_clear_error();
  if (file.certificates.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--", flag, "=", path,
        " contains no PEM certificate (-----BEGIN CERTIFICATE-----); pass a "
        "PEM-encoded certificate file"));
  }
  return file;
}

// Stops OpenSSL from prompting on the terminal for the passphrase of an
// encrypted key.
int NoPassphrase(char*, int, int, void*) { return -1; }

std::string SubjectOf(X509* certificate) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  X509_NAME_print_ex(bio.get(), X509_get_subject_name(certificate), 0,
                     XN_FLAG_RFC2253);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string TimeText(const ASN1_TIME* time) {
  BioPtr bio(BIO_new(BIO_s_mem()), &BIO_free);
  ASN1_TIME_print(bio.get(), time);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

// Checks that the private key parses and belongs to the leaf certificate,
// and that the leaf has not expired.
absl::Status CheckKeyAndValidity(const CertificateFile& chain,
                                 const std::string& key_pem) {
  const std::string cert_path = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string key_path = absl::GetFlag(FLAGS_tls_key_file);
  BioPtr bio = MemoryBio(key_pem);
  KeyPtr key(PEM_read_bio_PrivateKey(bio.get(), nullptr, &NoPassphrase, nullptr),
             &EVP_PKEY_free);
  if (key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file=", key_path,
        " is not an unencrypted PEM private key (", TakeOpenSslError(),
        "); gRPC needs the key without a passphrase, e.g. from "
        "`openssl pkey -in KEY -out KEY.plain`"));
  }
  X509* leaf = chain.certificates.front().get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_key_file=", key_path, " does not match the certificate in "
        "--tls_cert_file=", cert_path, " (subject ", SubjectOf(leaf),
        "); pass the key that the certificate was issued for"));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--tls_cert_file=", cert_path, " (subject ", SubjectOf(leaf),
        ") expired on ", TimeText(X509_get0_notAfter(leaf)),
        "; issue a new certificate"));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
    LOG(WARNING) << "--tls_cert_file=" << cert_path << " is valid only from "
                 << TimeText(X509_get0_notBefore(leaf))
                 << "; peers reject it until then (check the clocks)";
  }
  return absl::OkStatus();
}

// Logs a warning when the CA bundle does not verify this process's own
// certificate. That is no error, because peers may trust another CA, but in
// the usual set-up with one CA every peer would reject this process.
void WarnUnlessCaVerifies(const CertificateFile& chain,
                          const CertificateFile& ca) {
  StorePtr store(X509_STORE_new(), &X509_STORE_free);
  for (const X509Ptr& certificate : ca.certificates) {
    X509_STORE_add_cert(store.get(), certificate.get());
  }
  STACK_OF(X509)* intermediates = sk_X509_new_null();
  for (size_t i = 1; i < chain.certificates.size(); ++i) {
    sk_X509_push(intermediates, chain.certificates[i].get());
  }
  StoreContextPtr context(X509_STORE_CTX_new(), &X509_STORE_CTX_free);
  X509_STORE_CTX_init(context.get(), store.get(),
                      chain.certificates.front().get(), intermediates);
  if (X509_verify_cert(context.get()) != 1) {
    LOG(WARNING) << "--tls_ca_file=" << absl::GetFlag(FLAGS_tls_ca_file)
                 << " does not verify --tls_cert_file="
                 << absl::GetFlag(FLAGS_tls_cert_file) << ": "
                 << X509_verify_cert_error_string(
                        X509_STORE_CTX_get_error(context.get()))
                 << "; peers that trust only this CA will reject this process";
  }
  ERR_clear_error();
  sk_X509_free(intermediates);
}

// Checks which flags are set together, before any file is read.
absl::Status CheckFlagCombination(TlsRole role) {
  const std::string cert_path = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string key_path = absl::GetFlag(FLAGS_tls_key_file);
  const std::string ca_path = absl::GetFlag(FLAGS_tls_ca_file);
  const bool enabled =
      !cert_path.empty() || !key_path.empty() || !ca_path.empty();
  const bool require_client = absl::GetFlag(FLAGS_tls_require_client_cert);

  if (require_client && role == TlsRole::kClient) {
    return absl::InvalidArgumentError(
        "--tls_require_client_cert applies to servers, and this program only "
        "makes calls; drop the flag");
  }
  if (!enabled && require_client) {
    return absl::InvalidArgumentError(
        "--tls_require_client_cert needs TLS on; set --tls_cert_file, "
        "--tls_key_file and --tls_ca_file");
  }
  if (!enabled && !absl::GetFlag(FLAGS_tls_target_name_override).empty()) {
    return absl::InvalidArgumentError(
        "--tls_target_name_override needs TLS on; set --tls_ca_file (and "
        "--tls_cert_file with --tls_key_file), or drop the flag");
  }
  if (cert_path.empty() != key_path.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        cert_path.empty() ? "--tls_key_file" : "--tls_cert_file",
        " is set but ", cert_path.empty() ? "--tls_cert_file" : "--tls_key_file",
        " is empty; set both, the certificate and its private key"));
  }
  if (enabled && role == TlsRole::kServer && cert_path.empty()) {
    return absl::InvalidArgumentError(
        "--tls_ca_file is set, so TLS is on, but a server needs its own "
        "certificate; set --tls_cert_file and --tls_key_file");
  }
  if (require_client && ca_path.empty()) {
    return absl::InvalidArgumentError(
        "--tls_require_client_cert needs --tls_ca_file, the CA bundle that "
        "verifies client certificates");
  }
  return absl::OkStatus();
}

absl::Mutex config_mutex(absl::kConstInit);
std::shared_ptr<const TlsConfig>* stored_config
    ABSL_GUARDED_BY(config_mutex) = nullptr;

}  // namespace

absl::StatusOr<TlsConfig> LoadTlsConfigFromFlags(TlsRole role) {
  if (absl::Status status = CheckFlagCombination(role); !status.ok()) {
    return status;
  }
  const std::string cert_path = absl::GetFlag(FLAGS_tls_cert_file);
  const std::string key_path = absl::GetFlag(FLAGS_tls_key_file);
  const std::string ca_path = absl::GetFlag(FLAGS_tls_ca_file);
  TlsConfig config;
  config.enabled = !cert_path.empty() || !ca_path.empty();
  if (!config.enabled) return config;
  config.require_client_certificate =
      absl::GetFlag(FLAGS_tls_require_client_cert);
  config.target_name_override = absl::GetFlag(FLAGS_tls_target_name_override);

  std::optional<CertificateFile> chain;
  if (!cert_path.empty()) {
    absl::StatusOr<CertificateFile> read =
        ReadCertificates("tls_cert_file", cert_path);
    if (!read.ok()) return read.status();
    absl::StatusOr<std::string> key_pem = ReadFile("tls_key_file", key_path);
    if (!key_pem.ok()) return key_pem.status();
    if (absl::Status status = CheckKeyAndValidity(*read, *key_pem);
        !status.ok()) {
      return status;
    }
    config.certificate_chain_pem = read->pem;
    config.private_key_pem = *std::move(key_pem);
    chain = *std::move(read);
  }
  if (!ca_path.empty()) {
    absl::StatusOr<CertificateFile> ca =
        ReadCertificates("tls_ca_file", ca_path);
    if (!ca.ok()) return ca.status();
    if (chain.has_value()) WarnUnlessCaVerifies(*chain, *ca);
    config.root_certificates_pem = ca->pem;
  }
  return config;
}

void SetTlsConfig(TlsConfig config) {
  auto shared = std::make_shared<const TlsConfig>(std::move(config));
  absl::MutexLock lock(&config_mutex);
  if (stored_config == nullptr) {
    stored_config = new std::shared_ptr<const TlsConfig>(std::move(shared));
  } else {
    *stored_config = std::move(shared);
  }
}

std::shared_ptr<const TlsConfig> GetTlsConfig() {
  absl::MutexLock lock(&config_mutex);
  if (stored_config == nullptr) return std::make_shared<const TlsConfig>();
  return *stored_config;
}

absl::Status ConfigureTlsFromFlags(TlsRole role) {
  absl::StatusOr<TlsConfig> config = LoadTlsConfigFromFlags(role);
  if (!config.ok()) return config.status();
  if (!config->enabled) {
    // synthgradctl logs nothing here, so its output is unchanged without TLS.
    if (role == TlsRole::kServer) {
      LOG(INFO) << "TLS off: gRPC servers and channels are plaintext (see "
                   "--tls_cert_file)";
    }
  } else {
    const std::string ca_path = absl::GetFlag(FLAGS_tls_ca_file);
    LOG(INFO) << "TLS on: "
              << (config->certificate_chain_pem.empty()
                      ? std::string("no certificate of its own")
                      : absl::StrCat("certificate ",
                                     absl::GetFlag(FLAGS_tls_cert_file)))
              << ", peers verified with "
              << (ca_path.empty() ? std::string("gRPC's default roots")
                                  : absl::StrCat("CA bundle ", ca_path))
              << (role == TlsRole::kClient
                      ? std::string()
                      : config->require_client_certificate
                            ? ", client certificates required and verified "
                              "(mTLS)"
                            : ", client certificates not requested")
              << (config->target_name_override.empty()
                      ? std::string()
                      : absl::StrCat(", target name override ",
                                     config->target_name_override));
  }
  SetTlsConfig(*std::move(config));
  return absl::OkStatus();
}

std::shared_ptr<grpc::ChannelCredentials> MakeChannelCredentials(
    const TlsConfig& config) {
  if (!config.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = config.root_certificates_pem;
  options.pem_private_key = config.private_key_pem;
  options.pem_cert_chain = config.certificate_chain_pem;
  return grpc::SslCredentials(options);
}

std::shared_ptr<grpc::ServerCredentials> MakeServerCredentials(
    const TlsConfig& config) {
  if (!config.enabled) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      config.require_client_certificate
          ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
          : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  options.pem_root_certs = config.root_certificates_pem;
  options.pem_key_cert_pairs.push_back(
      {config.private_key_pem, config.certificate_chain_pem});
  return grpc::SslServerCredentials(options);
}

}  // namespace synthgrad
