#!/usr/bin/env bash
# Builds the Go client of lbd's API offline, from Debian's Go packages alone
# (scripts/setup.sh installs them: golang-go 1.19, golang-google-grpc-dev,
# golang-google-protobuf-dev, golang-github-golang-protobuf-1-5-dev,
# protoc-gen-go, protoc-gen-go-grpc): the stubs are generated from
# proto/lb.proto into a GOPATH under OUT (its go_package, lbd/proto/lb/v1),
# beside this directory's programs, and built in GOPATH mode against
# /usr/share/gocode with no module proxy. Nothing generated is kept in the
# repository.
#
#   clients/go/build.sh OUT      # OUT/bin/lbdsmoke
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=${1:?usage: build.sh OUT}
mkdir -p "$out"
out=$(cd "$out" && pwd)

for tool in go protoc protoc-gen-go protoc-gen-go-grpc; do
    command -v "$tool" >/dev/null || {
        echo "build.sh: $tool not found: run scripts/setup.sh (Debian's golang-go, protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc)" >&2
        exit 1
    }
done
[ -d /usr/share/gocode/src/google.golang.org/grpc ] || {
    echo "build.sh: /usr/share/gocode has no google.golang.org/grpc: install golang-google-grpc-dev (scripts/setup.sh)" >&2
    exit 1
}

gopath="$out/gopath"
rm -rf "$gopath"
mkdir -p "$gopath/src/lbd/clients/go" "$out/bin"
protoc -I "$proto" --go_out="$gopath/src" --go-grpc_out="$gopath/src" "$proto/lb.proto"
cp -r "$here/lbdsmoke" "$gopath/src/lbd/clients/go/"
cd "$gopath/src/lbd/clients/go/lbdsmoke"
GO111MODULE=off GOPATH="$gopath:/usr/share/gocode" GOPROXY=off GOFLAGS= GOCACHE="$out/cache" \
    go build -o "$out/bin/lbdsmoke" .
echo "$out/bin/lbdsmoke"
