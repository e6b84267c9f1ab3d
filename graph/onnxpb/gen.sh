#!/usr/bin/env bash
# Regenerates onnx.pb.go from ONNX 1.20's proto2 schema. The schema comes
# as the serialized FileDescriptorProto that the npm package onnx-buf
# embeds (generated from onnx.proto, syntax proto2); protoc reads it as a
# descriptor set, so no .proto text is needed.
#
# Needs: npm, node, protoc (Debian: protobuf-compiler) and
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
set -euo pipefail
cd "$(dirname "$0")"
pkg=onnx-buf@1.20.0-1
sum=77eeb4e3f87f98185ced793c9d5cc694cf8d3dfad1186683601af3b9eacf9737
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$pkg" >/dev/null)
echo "$sum  $tmp/onnx-buf-1.20.0-1.tgz" | sha256sum -c --quiet
tar xzf "$tmp/onnx-buf-1.20.0-1.tgz" -C "$tmp" package/dist/onnx_pb.js
node -e '
const fs = require("fs");
const js = fs.readFileSync(process.argv[1], "utf8");
const desc = Buffer.from(js.match(/fileDesc\("([^"]+)"/)[1], "base64");
// A FileDescriptorSet holding one file: field 1, length-delimited.
const len = []; let n = desc.length;
do { let b = n & 0x7f; n >>>= 7; len.push(n ? b | 0x80 : b); } while (n);
fs.writeFileSync(process.argv[2], Buffer.concat([Buffer.from([0x0a, ...len]), desc]));
' "$tmp/package/dist/onnx_pb.js" "$tmp/onnx.fds"
PATH="$PATH:$(go env GOPATH)/bin" protoc --descriptor_set_in="$tmp/onnx.fds" \
  --go_out=. --go_opt=paths=source_relative \
  --go_opt=Monnx.proto=github.com/onnxprune/onnxprune/graph/onnxpb onnx.proto
