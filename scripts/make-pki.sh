#!/usr/bin/env bash
# Makes a throw-away PKI for libvirt's TLS transport with openssl, laid out
# the way libvirt clients read it with ?pkipath=DIR:
#
#   DIR/cacert.pem DIR/cakey.pem           the CA
#   DIR/servercert.pem DIR/serverkey.pem   the server, CN=localhost
#                                          (SAN localhost and 127.0.0.1)
#   DIR/client/   cacert.pem clientcert.pem clientkey.pem   a good client
#   DIR/other/    the same, signed by the CA but another DN (CN=intruder)
#   DIR/expired/  the same DN as client/, expired in 2020
#   DIR/rogue/    the same DN as client/, signed by another CA
#   DIR/revoked/  the same DN as client/, signed by the CA and revoked in
#                 DIR/cacrl.pem (the CA's revocation list)
#   DIR/qemu/     ca-cert.pem server-cert.pem server-key.pem for QEMU's NBD
#                 server (a pull backup's tls='yes'), and client-cert.pem
#                 client-key.pem for an NBD client
#
# For tests and benchmarks only: keys are unencrypted.
set -euo pipefail
dir=${1:?usage: make-pki.sh DIR}
mkdir -p "$dir"
cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; "$@"; exit 1; }; }

ca() { # NAME SUBJECT
  quiet openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1key.pem" -out "$1cert.pem" \
    -days 30 -subj "$2" -addext basicConstraints=critical,CA:TRUE \
    -addext keyUsage=critical,keyCertSign,cRLSign
}
# leaf NAME SUBJECT CA-PREFIX EXTENSIONS
leaf() {
  quiet openssl req -newkey rsa:2048 -nodes -keyout "$1key.pem" -out "$1.csr" -subj "$2"
  printf '%s\n' "$4" > "$1.ext"
  quiet openssl x509 -req -in "$1.csr" -CA "$3cert.pem" -CAkey "$3key.pem" -CAcreateserial \
    -days 30 -out "$1cert.pem" -extfile "$1.ext"
  rm -f "$1.csr" "$1.ext"
}
client_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth'
server_ext='basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1'
client_dn='/C=GB/L=London/O=virtbackupd test/CN=client'

ca ca '/O=virtbackupd test/CN=test CA'
leaf server '/O=virtbackupd test/CN=localhost' ca "$server_ext"

client_dir() { # DIR SUBJECT CA-PREFIX
  mkdir -p "$1"
  leaf "$1/client" "$2" "$3" "$client_ext"
  cp cacert.pem "$1/cacert.pem"
}
client_dir client "$client_dn" ca
client_dir other '/C=GB/L=London/O=virtbackupd test/CN=intruder' ca
ca rogue-ca '/O=virtbackupd test/CN=test CA'
client_dir rogue "$client_dn" rogue-ca

# An expired client: `openssl x509 -days` cannot go back in time, `openssl
# ca` takes explicit dates.
mkdir -p expired ca-db
: > ca-db/index.txt
cat > ca-db/ca.cnf <<CNF
[ca]
default_ca = test
[test]
database = $PWD/ca-db/index.txt
new_certs_dir = $PWD/ca-db
serial = $PWD/ca-db/serial
default_md = sha256
default_crl_days = 30
crlnumber = $PWD/ca-db/crlnumber
crl_extensions = crl_ext
policy = any
copy_extensions = none
preserve = yes
x509_extensions = client
[any]
countryName = optional
localityName = optional
organizationName = optional
commonName = supplied
[crl_ext]
authorityKeyIdentifier = keyid:always
[client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
CNF
echo 01 > ca-db/serial
echo 01 > ca-db/crlnumber
echo "unique_subject = no" > ca-db/index.txt.attr
quiet openssl req -newkey rsa:2048 -nodes -keyout expired/clientkey.pem -out expired/client.csr -subj "$client_dn"
quiet openssl ca -batch -config ca-db/ca.cnf -cert cacert.pem -keyfile cakey.pem \
  -startdate 20200101000000Z -enddate 20200102000000Z -notext \
  -in expired/client.csr -out expired/clientcert.pem
rm -f expired/client.csr
cp cacert.pem expired/cacert.pem

# A revoked client, and the CA's list that says so.
mkdir -p revoked
quiet openssl req -newkey rsa:2048 -nodes -keyout revoked/clientkey.pem -out revoked/client.csr -subj "$client_dn"
quiet openssl ca -batch -config ca-db/ca.cnf -cert cacert.pem -keyfile cakey.pem -days 30 -notext \
  -in revoked/client.csr -out revoked/clientcert.pem
rm -f revoked/client.csr
cp cacert.pem revoked/cacert.pem
quiet openssl ca -batch -config ca-db/ca.cnf -cert cacert.pem -keyfile cakey.pem -revoke revoked/clientcert.pem
quiet openssl ca -batch -config ca-db/ca.cnf -cert cacert.pem -keyfile cakey.pem -gencrl -out cacrl.pem

# QEMU's x509 credentials directory for NBD over TLS.
mkdir -p qemu
cp cacert.pem qemu/ca-cert.pem
leaf qemu/server '/O=virtbackupd test/CN=localhost' ca "$server_ext"
mv qemu/servercert.pem qemu/server-cert.pem
mv qemu/serverkey.pem qemu/server-key.pem
leaf qemu/client "$client_dn" ca "$client_ext"
mv qemu/clientcert.pem qemu/client-cert.pem
mv qemu/clientkey.pem qemu/client-key.pem
