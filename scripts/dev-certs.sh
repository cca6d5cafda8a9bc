#!/usr/bin/env bash
# Development certificates and a bearer token for deploy/docker-compose.tls.yml (or a local
# `deepserve serve --tls-...`), made with openssl. NOT for production: in Kubernetes use the Secrets
# and cert-manager of k8s/components/tls-auth.
#
#   scripts/dev-certs.sh              # writes deploy/certs/ (git-ignored); keeps it if it exists
#   scripts/dev-certs.sh DIR          # writes DIR instead
#   DAYS=30 NAMES="DNS:localhost,DNS:deepserve,DNS:myhost,IP:127.0.0.1" scripts/dev-certs.sh
#
# DIR/ca/      ca.key                  the development CA's key: signs more client certificates; never
#                                      mounted into the container
# DIR/server/  tls.crt tls.key         server certificate (NAMES: localhost, deepserve, 127.0.0.1, ::1)
#              client-ca.crt           the CA again, for DEEPSERVE_TLS_CLIENT_CA_FILE (mutual TLS)
#              tokens.yaml             DEEPSERVE_AUTH_TOKENS_FILE: the digest of one token, scope infer
#              (this folder is what the container mounts, read-only)
# DIR/client/  ca.crt                  what clients trust (--tls-ca-file, grpcurl -cacert)
#              client.crt client.key   a client certificate for mutual TLS
#              token                   the bearer token (authorization: Bearer ...)
#
# The container runs as uid/gid 10001 and reads DIR/server through a bind mount: as root the script
# gives that folder to group 10001 (mode 0640); otherwise its files are world-readable (0644), which is
# acceptable only because this is a throwaway key for localhost. Rotating: delete DIR and run again;
# a server with the folder mounted (not single files) sees the new files without a restart.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${1:-deploy/certs}
DAYS=${DAYS:-90}
NAMES=${NAMES:-"DNS:localhost,DNS:deepserve,IP:127.0.0.1,IP:::1"}

if [ -e "$DIR/server/tls.crt" ]; then
    echo "$DIR already holds development certificates; delete it to make new ones" >&2
    exit 0
fi
command -v openssl >/dev/null || { echo "openssl is needed" >&2; exit 1; }

umask 077
mkdir -p "$DIR/ca" "$DIR/server" "$DIR/client"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

cat > "$work/openssl.cnf" <<EOF
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = $NAMES
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF

serial() { echo "0x$(openssl rand -hex 16)"; }
keypair() {  # keypair KEY_OUT CSR_OUT SUBJECT: a P-256 key (PKCS#8) and its signing request
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config "$work/openssl.cnf" \
        -subj "$3" -keyout "$1" -out "$2" 2>/dev/null
}
sign() {  # sign CSR CERT_OUT EXTENSIONS: signed by the development CA
    openssl x509 -req -in "$1" -CA "$DIR/client/ca.crt" -CAkey "$DIR/ca/ca.key" -set_serial "$(serial)" \
        -days "$DAYS" -sha256 -extfile "$work/openssl.cnf" -extensions "$3" -out "$2" 2>/dev/null
}

openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -config "$work/openssl.cnf" \
    -extensions ca -subj "/CN=deepserve development CA" -days "$DAYS" -sha256 -set_serial "$(serial)" \
    -keyout "$DIR/ca/ca.key" -out "$DIR/client/ca.crt" 2>/dev/null
cp "$DIR/client/ca.crt" "$DIR/server/client-ca.crt"

keypair "$DIR/server/tls.key" "$work/server.csr" "/CN=localhost"
sign "$work/server.csr" "$DIR/server/tls.crt" server
keypair "$DIR/client/client.key" "$work/client.csr" "/CN=deepserve-dev-client"
sign "$work/client.csr" "$DIR/client/client.crt" client

token=$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')
printf '%s\n' "$token" > "$DIR/client/token"
digest=$(printf '%s' "$token" | openssl dgst -sha256 -r | cut -d' ' -f1)
cat > "$DIR/server/tokens.yaml" <<EOF
# Development token (its value is in ../client/token). Add entries for more clients:
#   printf %s "\$TOKEN" | sha256sum
tokens:
  - name: dev
    sha256: $digest
    scopes: [infer]
    max_concurrent_requests: 64
EOF

openssl verify -CAfile "$DIR/client/ca.crt" "$DIR/server/tls.crt" "$DIR/client/client.crt" >/dev/null

chmod 0755 "$DIR" "$DIR/server" "$DIR/client"
chmod 0644 "$DIR/client/ca.crt" "$DIR/client/client.crt"
if [ "$(id -u)" -eq 0 ]; then
    chgrp -R 10001 "$DIR/server" && chmod 0750 "$DIR/server" && chmod 0640 "$DIR/server"/*
else
    chmod 0644 "$DIR/server"/*
fi

cat <<EOF
Development CA, server certificate ($NAMES, $DAYS days), client certificate and token in $DIR/.
  docker compose -f docker-compose.yml -f deploy/docker-compose.tls.yml up
  grpcurl -cacert $DIR/client/ca.crt -H "authorization: Bearer \$(cat $DIR/client/token)" localhost:8001 list
EOF
