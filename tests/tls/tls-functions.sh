# Helpers for the TLS tests.  Source after tests/functions.sh.
#
# make_pki: certificates made with certtool under $T/pki, never kept:
#   $T/pki/server/    ca-cert.pem, server-cert.pem, server-key.pem: the
#                     server's --tls-certificates (localhost, 127.0.0.1, ::1)
#   $T/pki/client/    ca-cert.pem, client-cert.pem, client-key.pem: a
#                     client of the same CA (libnbd's and qemu's layout)
#   $T/pki/client2/   a second client of the same CA, another name
#   $T/pki/other/     a client whose certificate another CA signed
#   $T/pki/wrongca/   a client that trusts only the other CA
#   $T/pki/expired/   server files whose certificate expired in 2020
#   $T/pki/client-expired/  a client whose certificate expired
# make_psk FILE USER...: a psktool key file with a key for each user.

require certtool psktool

_tls_key()
{
    certtool --generate-privkey --key-type=ecdsa --sec-param=high \
        --outfile "$1" >/dev/null 2>&1 || fail "certtool: private key"
}

# _tls_ca NAME: a self-signed CA in $T/pki/NAME-ca-{key,cert}.pem
_tls_ca()
{
    cat >"$T/pki/$1-ca.info" <<INFO
cn = "diskserve test CA $1"
ca
cert_signing_key
expiration_days = 30
INFO
    _tls_key "$T/pki/$1-ca-key.pem"
    certtool --generate-self-signed --load-privkey "$T/pki/$1-ca-key.pem" \
        --template "$T/pki/$1-ca.info" --outfile "$T/pki/$1-ca-cert.pem" \
        >/dev/null 2>&1 || fail "certtool: CA $1"
}

# _tls_cert CA KEY CERT TEMPLATE-LINES: a certificate CA signs.
_tls_cert()
{
    local ca=$1 key=$2 cert=$3
    shift 3
    printf '%s\n' "$@" >"$cert.info"
    _tls_key "$key"
    certtool --generate-certificate --load-privkey "$key" \
        --load-ca-certificate "$T/pki/$ca-ca-cert.pem" \
        --load-ca-privkey "$T/pki/$ca-ca-key.pem" \
        --template "$cert.info" --outfile "$cert" >/dev/null 2>&1 ||
        fail "certtool: $cert"
}

make_pki()
{
    local p="$T/pki"
    mkdir -p "$p/server" "$p/client" "$p/client2" "$p/other" \
        "$p/wrongca" "$p/expired" "$p/client-expired"
    _tls_ca main
    _tls_ca second
    local server_info=('organization = "diskserve tests"' 'cn = "localhost"'
        'dns_name = "localhost"' 'ip_address = "127.0.0.1"'
        'ip_address = "::1"' 'tls_www_server' 'signing_key'
        'encryption_key')
    _tls_cert main "$p/server/server-key.pem" "$p/server/server-cert.pem" \
        "${server_info[@]}" 'expiration_days = 30'
    cp "$p/main-ca-cert.pem" "$p/server/ca-cert.pem"
    _tls_cert main "$p/expired/server-key.pem" "$p/expired/server-cert.pem" \
        "${server_info[@]}" 'activation_date = "2019-01-01 00:00:00 UTC"' \
        'expiration_date = "2020-01-01 00:00:00 UTC"'
    cp "$p/main-ca-cert.pem" "$p/expired/ca-cert.pem"
    local d ca cn
    for d in client client2 other client-expired; do
        ca=main cn=$d
        [ "$d" = other ] && ca=second
        local dates='expiration_days = 30'
        [ "$d" = client-expired ] &&
            dates='expiration_date = "2020-01-01 00:00:00 UTC"'
        _tls_cert "$ca" "$p/$d/client-key.pem" "$p/$d/client-cert.pem" \
            'organization = "diskserve tests"' "cn = \"$cn\"" \
            'tls_www_client' 'signing_key' 'encryption_key' "$dates"
        cp "$p/main-ca-cert.pem" "$p/$d/ca-cert.pem"
    done
    # Trusts only the second CA: our server's certificate means nothing.
    cp "$p/second-ca-cert.pem" "$p/wrongca/ca-cert.pem"
    cp "$p/client/client-key.pem" "$p/client/client-cert.pem" "$p/wrongca/"
}

# cert_dn FILE: the subject DN as the server compares it.
cert_dn()
{
    certtool --certificate-info --infile "$1" |
        sed -n 's/^[[:space:]]*Subject: //p' | head -1
}

make_psk()
{
    local file=$1
    shift
    : >"$file"
    for u in "$@"; do
        psktool -u "$u" -p "$file" >/dev/null 2>&1 || fail "psktool: $u"
    done
}
