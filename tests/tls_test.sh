#!/usr/bin/env bash
# Mutual TLS between real synthgrad processes on 127.0.0.1.
#
# Makes a CA, a second CA that the servers do not trust, a peer certificate
# for the servers (subjectAltName IP:127.0.0.1 and DNS:localhost), a client
# certificate from the CA and one from the untrusted CA, all with the openssl
# command. It checks start-up errors for bad TLS flags. Then it starts three
# synthgrad_layer processes and a synthgrad_coordinator that require client
# certificates. The coordinator must reject a plaintext client, a TLS client
# without a certificate and a client with the untrusted certificate. A client
# with the valid certificate must train configs/fashion_mnist_smoke.textproto
# to a SUCCEEDED job.
#
# Usage: tls_test.sh BUILD_DIR SOURCE_DIR
# Prints PASSED and exits 0 when every check passes; exits 1 otherwise.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: tls_test.sh BUILD_DIR SOURCE_DIR" >&2
  exit 2
fi
build_dir=$1
source_dir=$2
layer=$build_dir/services/layer/synthgrad_layer
coordinator=$build_dir/services/coordinator/synthgrad_coordinator
ctl=$build_dir/services/ctl/synthgradctl
spec=$source_dir/configs/fashion_mnist_smoke.textproto

if ! command -v openssl >/dev/null; then
  echo "FAILED: openssl not found; install the Debian package openssl" >&2
  exit 1
fi
for binary in "$layer" "$coordinator" "$ctl"; do
  if [[ ! -x $binary ]]; then
    echo "FAILED: $binary not found; build first" >&2
    exit 1
  fi
done

work=$(mktemp -d)
pids=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
  if [[ $status -ne 0 ]]; then
    for log in "$work"/*.log; do
      [[ -f $log ]] || continue
      echo "--- last lines of $(basename "$log")"
      tail -n 15 "$log"
    done
  fi
  rm -rf "$work"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

failures=0
fail() {
  echo "FAILED: $*"
  failures=$((failures + 1))
}

# --- Certificates ---------------------------------------------------------

# Writes NAME.key and a self-signed CA certificate NAME.crt.
make_ca() {
  local name=$1
  printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n' \
    >"$work/$name.ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$name.key" 2>/dev/null
  openssl req -new -key "$work/$name.key" -subj "/CN=synthgrad test $name" -out "$work/$name.csr"
  openssl x509 -req -in "$work/$name.csr" -signkey "$work/$name.key" -days 2 \
    -extfile "$work/$name.ext" -out "$work/$name.crt" 2>/dev/null
}

# Writes NAME.key and NAME.crt signed by CA, with the extensions in EXTENSIONS.
issue() {
  local name=$1 ca=$2 extensions=$3
  printf '%b' "$extensions" >"$work/$name.ext"
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/$name.key" 2>/dev/null
  openssl req -new -key "$work/$name.key" -subj "/CN=synthgrad test $name" -out "$work/$name.csr"
  openssl x509 -req -in "$work/$name.csr" -CA "$work/$ca.crt" -CAkey "$work/$ca.key" \
    -set_serial "0x$(openssl rand -hex 8)" -days 2 -extfile "$work/$name.ext" \
    -out "$work/$name.crt" 2>/dev/null
}

make_ca ca
make_ca untrusted-ca
leaf='basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n'
# The servers also use this certificate as clients of each other.
issue peer ca "${leaf}extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
issue client ca "${leaf}extendedKeyUsage=clientAuth\n"
issue rogue untrusted-ca "${leaf}extendedKeyUsage=clientAuth\n"
# An expired certificate: `openssl x509 -req` in OpenSSL 3.0 cannot set
# past dates, but `openssl ca` can.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/expired.key" 2>/dev/null
openssl req -new -key "$work/expired.key" -subj "/CN=synthgrad test expired" -out "$work/expired.csr"
mkdir "$work/ca-db"
touch "$work/ca-db/index.txt"
echo 01 >"$work/ca-db/serial"
printf '[ca]\ndefault_ca = test\n[test]\ndatabase = %s\nnew_certs_dir = %s\nserial = %s\ndefault_md = sha256\npolicy = any\n[any]\ncommonName = supplied\n' \
  "$work/ca-db/index.txt" "$work/ca-db" "$work/ca-db/serial" >"$work/ca-db/ca.cnf"
openssl ca -batch -config "$work/ca-db/ca.cnf" -cert "$work/ca.crt" -keyfile "$work/ca.key" \
  -in "$work/expired.csr" -out "$work/expired.crt" -notext \
  -startdate 20200101000000Z -enddate 20200102000000Z 2>/dev/null
# The peer key with a passphrase, which gRPC cannot use.
openssl pkey -in "$work/peer.key" -aes256 -passout pass:secret -out "$work/encrypted.key"

openssl verify -CAfile "$work/ca.crt" "$work/peer.crt" "$work/client.crt" >/dev/null
if openssl verify -CAfile "$work/ca.crt" "$work/rogue.crt" >/dev/null 2>&1; then
  fail "rogue.crt verifies against ca.crt; the untrusted CA is not separate"
fi
echo "ok: certificates made in $work"

mtls_server_flags=(
  "--tls_cert_file=$work/peer.crt" "--tls_key_file=$work/peer.key"
  "--tls_ca_file=$work/ca.crt" --tls_require_client_cert
)
valid_client_flags=(
  "--tls_ca_file=$work/ca.crt" "--tls_cert_file=$work/client.crt" "--tls_key_file=$work/client.key"
)

# --- Start-up errors ------------------------------------------------------

# Checks that `binary args...` exits with status 1 and prints EXPECTED.
expect_startup_error() {
  local name=$1 expected=$2
  shift 2
  local status=0
  timeout 20 "$@" >"$work/startup.out" 2>&1 || status=$?
  if [[ $status -ne 1 ]]; then
    fail "$name: exited with $status, expected 1; output: $(cat "$work/startup.out")"
  elif ! grep -qF -- "$expected" "$work/startup.out"; then
    fail "$name: output lacks '$expected': $(cat "$work/startup.out")"
  else
    echo "ok: $name -> $(grep -F -- "$expected" "$work/startup.out" | head -n 1)"
  fi
}

no_ports=(--port 0 --metrics_port -1)
expect_startup_error "missing certificate file" "--tls_cert_file=$work/missing.crt: cannot open" \
  "$layer" "${no_ports[@]}" "--tls_cert_file=$work/missing.crt" "--tls_key_file=$work/peer.key" \
  "--tls_ca_file=$work/ca.crt"
expect_startup_error "key of another certificate" "does not match the certificate" \
  "$coordinator" "${no_ports[@]}" "--tls_cert_file=$work/peer.crt" "--tls_key_file=$work/client.key" \
  "--tls_ca_file=$work/ca.crt"
expect_startup_error "client certificates without a CA" "--tls_require_client_cert needs --tls_ca_file" \
  "$layer" "${no_ports[@]}" "--tls_cert_file=$work/peer.crt" "--tls_key_file=$work/peer.key" \
  --tls_require_client_cert
expect_startup_error "key file as CA bundle" "contains no PEM certificate" \
  "$layer" "${no_ports[@]}" "--tls_cert_file=$work/peer.crt" "--tls_key_file=$work/peer.key" \
  "--tls_ca_file=$work/peer.key"
expect_startup_error "expired certificate" "expired on Jan  2 00:00:00 2020 GMT" \
  "$layer" "${no_ports[@]}" "--tls_cert_file=$work/expired.crt" "--tls_key_file=$work/expired.key" \
  "--tls_ca_file=$work/ca.crt"
expect_startup_error "encrypted private key" "--tls_key_file=$work/encrypted.key is not an unencrypted PEM private key" \
  "$coordinator" "${no_ports[@]}" "--tls_cert_file=$work/peer.crt" "--tls_key_file=$work/encrypted.key" \
  "--tls_ca_file=$work/ca.crt"
expect_startup_error "certificate without key" "--tls_cert_file is set but --tls_key_file is empty" \
  "$coordinator" "${no_ports[@]}" "--tls_cert_file=$work/peer.crt" "--tls_ca_file=$work/ca.crt"
expect_startup_error "server with only a CA" "a server needs its own certificate" \
  "$layer" "${no_ports[@]}" "--tls_ca_file=$work/ca.crt"
expect_startup_error "client-certificate flag in synthgradctl" "applies to servers" \
  "$ctl" status --coordinator=127.0.0.1:1 "${valid_client_flags[@]}" --tls_require_client_cert

# --- Servers --------------------------------------------------------------

# Waits for a server to write its port file and prints the port.
wait_for_port() {
  local file=$1 pid=$2 name=$3
  for _ in $(seq 1 100); do
    if [[ -s $file ]]; then
      cat "$file"
      return 0
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "FAILED: $name exited at start-up" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "FAILED: $name wrote no port file within 10 s" >&2
  return 1
}

addresses=()
for i in 0 1 2; do
  "$layer" --bind_address 127.0.0.1 --port 0 --port_file "$work/group-$i.port" --metrics_port -1 \
    "${mtls_server_flags[@]}" >"$work/group-$i.log" 2>&1 &
  pids+=($!)
  addresses+=("127.0.0.1:$(wait_for_port "$work/group-$i.port" "$!" "group-$i")")
done
"$coordinator" --bind_address 127.0.0.1 --port 0 --port_file "$work/coordinator.port" --metrics_port -1 \
  "${mtls_server_flags[@]}" >"$work/coordinator.log" 2>&1 &
pids+=($!)
target=127.0.0.1:$(wait_for_port "$work/coordinator.port" "$!" coordinator)
echo "ok: groups ${addresses[*]}, coordinator $target"

for name in group-0 group-1 group-2 coordinator; do
  if grep -q "TLS on: .*client certificates required and verified (mTLS)" "$work/$name.log"; then
    echo "ok: $name logs that mTLS is on"
  else
    fail "$name does not log that mTLS is on"
  fi
  if grep -q "BEGIN .*PRIVATE KEY" "$work/$name.log"; then
    fail "$name logs private key material"
  fi
done

# --- Clients --------------------------------------------------------------

# Before the first job, GetJobStatus fails with NOT_FOUND "no job has been
# started". That reply proves the TLS handshake succeeded, so a rejected
# client must fail without it.
no_job="no job has been started"

# Runs `synthgradctl status` with CLIENT_FLAGS and checks that the call
# fails before it reaches the coordinator's handler.
expect_rejected() {
  local name=$1
  shift
  local status=0
  timeout 30 "$ctl" status --coordinator="$target" "$@" >"$work/client.out" 2>&1 || status=$?
  if [[ $status -ne 1 ]]; then
    fail "$name: synthgradctl status exited with $status, expected 1: $(cat "$work/client.out")"
  elif grep -qF "$no_job" "$work/client.out"; then
    fail "$name: the coordinator answered the call, so the client was not rejected: $(cat "$work/client.out")"
  elif ! grep -q "GetJobStatus at $target failed" "$work/client.out"; then
    fail "$name: expected a failed GetJobStatus, got: $(cat "$work/client.out")"
  else
    echo "ok: $name rejected: $(grep "GetJobStatus" "$work/client.out" | head -n 1)"
  fi
}

expect_rejected "plaintext client"
expect_rejected "TLS client without a certificate" "--tls_ca_file=$work/ca.crt"
expect_rejected "client with the untrusted-CA certificate" \
  "--tls_ca_file=$work/ca.crt" "--tls_cert_file=$work/rogue.crt" "--tls_key_file=$work/rogue.key"
expect_rejected "client that does not trust the server's CA" \
  "--tls_ca_file=$work/untrusted-ca.crt" "--tls_cert_file=$work/client.crt" "--tls_key_file=$work/client.key"
expect_rejected "client checking a name the certificate lacks" \
  "${valid_client_flags[@]}" --tls_target_name_override=coordinator.example

# The valid certificate reaches the handler, with the IP address and with
# the override that names the certificate's DNS entry.
for extra in "" --tls_target_name_override=localhost; do
  status=0
  timeout 30 "$ctl" status --coordinator="$target" "${valid_client_flags[@]}" $extra \
    >"$work/client.out" 2>&1 || status=$?
  if grep -qF "$no_job" "$work/client.out"; then
    echo "ok: client with the valid certificate ${extra:+($extra) }reached the coordinator"
  else
    fail "client with the valid certificate ${extra:+($extra) }did not reach the coordinator (exit $status): $(cat "$work/client.out")"
  fi
done

# --- Training -------------------------------------------------------------

status=0
timeout 300 "$ctl" train --spec "$spec" --coordinator "$target" \
  --group_addresses "$(IFS=,; echo "${addresses[*]}")" --summary_out "$work/summary.json" \
  "${valid_client_flags[@]}" >"$work/train.out" 2>"$work/train.err" || status=$?
if [[ $status -ne 0 ]]; then
  fail "synthgradctl train exited with $status: $(cat "$work/train.out" "$work/train.err")"
elif ! grep -q '"state": "JOB_STATE_SUCCEEDED"' "$work/summary.json"; then
  fail "the job summary has no JOB_STATE_SUCCEEDED: $(cat "$work/summary.json")"
else
  echo "ok: $(tail -n 1 "$work/train.out")"
fi

for i in "${!pids[@]}"; do
  if ! kill -0 "${pids[$i]}" 2>/dev/null; then
    fail "server process ${pids[$i]} exited before the end of the test"
  fi
done

if [[ $failures -gt 0 ]]; then
  echo "$failures checks failed"
  exit 1
fi
echo "PASSED"
