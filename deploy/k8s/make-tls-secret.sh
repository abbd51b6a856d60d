#!/usr/bin/env bash
# Makes a private CA and one certificate for every synthgrad pod of a
# namespace, and writes the Kubernetes Secret that the production overlay
# mounts (type kubernetes.io/tls with the keys tls.crt, tls.key and ca.crt).
#
# Usage: deploy/k8s/make-tls-secret.sh [--namespace NS] [--days N] OUT_DIR
#   --namespace NS  namespace of the deployment; default synthgrad
#   --days N        validity of the CA and the certificate; default 365
#   OUT_DIR         new folder outside this repository for ca.key, ca.crt,
#                   tls.key, tls.crt and synthgrad-tls-secret.yaml
#
# Then apply the Secret and the overlay, in either order (pods wait in
# ContainerCreating until their Secret exists):
#   kubectl apply -f OUT_DIR/synthgrad-tls-secret.yaml
#   kubectl apply -k deploy/k8s/overlays/production
# Applying the Secret first needs the namespace: kubectl create namespace NS
#
# The certificate is both server and client certificate (extendedKeyUsage
# serverAuth and clientAuth) and names:
#   *.group.NS.svc.cluster.local       the groups, group-N.group.NS...
#   coordinator.NS.svc.cluster.local   the coordinator
#   localhost, IP 127.0.0.1            kubectl port-forward to a pod
# Keep OUT_DIR/ca.key secret: it signs certificates that every synthgrad
# pod of the namespace trusts. The Secret contains tls.key.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
secret_name=synthgrad-tls
namespace=synthgrad
days=365
out_dir=
usage() {
  sed -n '6,16p' "$0" | sed 's/^# \{0,1\}//'
}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --namespace) namespace=${2:?--namespace needs a name}; shift 2 ;;
    --namespace=*) namespace=${1#--namespace=}; shift ;;
    --days) days=${2:?--days needs a number}; shift 2 ;;
    --days=*) days=${1#--days=}; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "make-tls-secret.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
    *)
      if [[ -n $out_dir ]]; then
        echo "make-tls-secret.sh: more than one OUT_DIR given ('$out_dir', '$1')" >&2
        exit 2
      fi
      out_dir=$1; shift ;;
  esac
done
if [[ -z $out_dir ]]; then
  echo "make-tls-secret.sh: OUT_DIR is missing" >&2
  usage >&2
  exit 2
fi
if ! [[ $namespace =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]]; then
  echo "make-tls-secret.sh: --namespace '$namespace' is not a valid Kubernetes namespace name" >&2
  exit 2
fi
if ! [[ $days =~ ^[1-9][0-9]*$ ]]; then
  echo "make-tls-secret.sh: --days '$days' is not a positive number" >&2
  exit 2
fi
if ! command -v openssl >/dev/null; then
  echo "make-tls-secret.sh: openssl not found; install the Debian package openssl" >&2
  exit 1
fi
if [[ -e $out_dir ]]; then
  echo "make-tls-secret.sh: $out_dir exists; pass a new folder, so no key is overwritten" >&2
  exit 2
fi
mkdir -p "$out_dir"
out_dir=$(cd "$out_dir" && pwd)
# An output folder inside the repository could get its private keys committed.
if [[ $out_dir == "$root" || $out_dir == "$root"/* ]]; then
  rmdir "$out_dir"
  echo "make-tls-secret.sh: $out_dir is inside the repository; pass a folder outside $root" >&2
  exit 2
fi
chmod 700 "$out_dir"
umask 077

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out_dir/ca.key" 2>/dev/null
cat >"$out_dir/ca.ext" <<EXT
basicConstraints=critical,CA:TRUE
keyUsage=critical,keyCertSign,cRLSign
subjectKeyIdentifier=hash
EXT
openssl req -new -key "$out_dir/ca.key" -subj "/CN=synthgrad CA ($namespace)" -out "$out_dir/ca.csr"
openssl x509 -req -in "$out_dir/ca.csr" -signkey "$out_dir/ca.key" -days "$days" \
  -extfile "$out_dir/ca.ext" -out "$out_dir/ca.crt" 2>/dev/null

openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$out_dir/tls.key" 2>/dev/null
cat >"$out_dir/tls.ext" <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=DNS:*.group.$namespace.svc.cluster.local,DNS:coordinator.$namespace.svc.cluster.local,DNS:localhost,IP:127.0.0.1
EXT
openssl req -new -key "$out_dir/tls.key" -subj "/CN=synthgrad ($namespace)" -out "$out_dir/tls.csr"
openssl x509 -req -in "$out_dir/tls.csr" -CA "$out_dir/ca.crt" -CAkey "$out_dir/ca.key" \
  -set_serial "0x$(openssl rand -hex 16)" -days "$days" -extfile "$out_dir/tls.ext" \
  -out "$out_dir/tls.crt" 2>/dev/null
openssl verify -CAfile "$out_dir/ca.crt" "$out_dir/tls.crt" >/dev/null
rm -f "$out_dir"/*.csr "$out_dir"/*.ext

secret=$out_dir/$secret_name-secret.yaml
{
  printf 'apiVersion: v1\nkind: Secret\nmetadata:\n'
  printf '  name: %s\n  namespace: %s\n' "$secret_name" "$namespace"
  printf '  labels:\n    app.kubernetes.io/name: synthgrad\n    app.kubernetes.io/part-of: synthgrad\n'
  printf 'type: kubernetes.io/tls\ndata:\n'
  for key in tls.crt tls.key ca.crt; do
    printf '  %s: %s\n' "$key" "$(base64 -w 0 "$out_dir/$key")"
  done
} >"$secret"

echo "Wrote $out_dir/{ca.key,ca.crt,tls.key,tls.crt} and $secret."
echo "Apply it (the namespace must exist) and the overlay:"
echo "  kubectl apply -f $secret"
echo "  kubectl apply -k $root/deploy/k8s/overlays/production"
