#!/usr/bin/env bash
# Generates Python code for proto/lc.proto into proto/ (mode "proto"), or checks that the
# checked-in files are exactly what the generator produces (mode "check").
#
# protoc names generated imports after the .proto file's path under its include root,
# so the source is staged as lc/proto/lc.proto: the gRPC module then imports
# `from lc.proto import lc_pb2`, which matches the installed package layout.
set -euo pipefail
mode=${1:-proto}
root=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src/lc/proto" "$tmp/out"
cp "$root/proto/lc.proto" "$tmp/src/lc/proto/lc.proto"
"$py" -m grpc_tools.protoc -I "$tmp/src" --python_out="$tmp/out" --pyi_out="$tmp/out" \
    --grpc_python_out="$tmp/out" "$tmp/src/lc/proto/lc.proto"
generated=(lc_pb2.py lc_pb2.pyi lc_pb2_grpc.py)
if [ "$mode" = check ]; then
    status=0
    for f in "${generated[@]}"; do
        if ! diff -u "$root/proto/$f" "$tmp/out/lc/proto/$f" >/dev/null 2>&1; then
            echo "proto-check: proto/$f is out of date with proto/lc.proto (run: make proto)" >&2
            status=1
        fi
    done
    [ $status -eq 0 ] && echo "proto-check: generated code is current"
    exit $status
fi
for f in "${generated[@]}"; do cp "$tmp/out/lc/proto/$f" "$root/proto/$f"; done
echo "generated: ${generated[*]/#/proto/}"
