#!/usr/bin/env bash
# scripts/gpu-check.sh OUT_DIR [--gles]: the one prepared run for the GPU machine (no Node.js, no network
# there). Build the device kit first, on a CPU machine, in the project root (the shared GPU kit's
# make-kit.sh writes .device-kit/: Node, the Vulkan/EGL loaders, a pruned node_modules with the optional
# webgpu packages); take .device-kit along with the checkout. This script re-runs itself inside the kit's
# on-device.sh (which unpacks all that and points Vulkan at the NVIDIA driver), then runs
# scripts/gpu-check.ts: the webgpu tests, tiny and hidden-256 trained on webgpu against wasm, a pp2 job
# on the one GPU and the bench's gpu section, in under 5 minutes. Figures: OUT_DIR/gpu-check.json; every
# command's output: OUT_DIR/logs.txt; the GPU and Node: OUT_DIR/gpu.txt. --gles rehearses it on a CPU
# machine on Dawn's OpenGL ES backend over Mesa (slow, GPU_CHECK_TIMEOUT=1100: the tests, tiny and pp2
# pass there in ~5 minutes; hidden 256 fails by design: its logits exceed llvmpipe's 128 MiB binding).
#
# `bash scripts/gpu-check.sh --prepare` (on the CPU machine, after make-kit.sh) adds this machine's
# nats-server to the kit: the multi-process jobs need a NATS server, and the GPU machine has none.
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--prepare" ]; then
  [ -d .device-kit ] || { echo "gpu-check --prepare: build .device-kit first (the shared GPU kit's make-kit.sh)" >&2; exit 3; }
  server=$(command -v nats-server) || { echo "gpu-check --prepare: nats-server is not installed here (apt-get install nats-server)" >&2; exit 3; }
  xz -9 -c "$server" > .device-kit/nats-server.xz && echo "gpu-check: added $(du -h .device-kit/nats-server.xz | cut -f1) nats-server to .device-kit"
  exit
fi
OUT=${1:?usage: bash scripts/gpu-check.sh OUT_DIR [--gles], or --prepare}
MODE=${2:-}
if [ -z "${GPU_CHECK_INSIDE:-}" ]; then
  [ -f .device-kit/on-device.sh ] || { echo "gpu-check: no .device-kit/ here: build it with the shared GPU kit's make-kit.sh on a CPU machine and take it along" >&2; exit 3; }
  # GPU_CHECK_TIMEOUT: seconds for the whole check (the rehearsal on a software adapter needs ~900).
  GPU_CHECK_INSIDE=1 exec bash .device-kit/on-device.sh $MODE --timeout "${GPU_CHECK_TIMEOUT:-290}" bash scripts/gpu-check.sh "$OUT"
fi
mkdir -p "$OUT"
if ! (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
  if [ -f .device-kit/nats-server.xz ]; then
    server=${DEVICE_KIT_HOME:-/tmp/kit}/nats-server
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' .device-kit/nats-server.xz "$server"
    chmod +x "$server"
    "$server" -a 127.0.0.1 -p 4222 > /tmp/gpu-check-nats.log 2>&1 &
    trap 'kill $! 2>/dev/null' EXIT
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null && break; sleep 0.1; done
  else
    echo "gpu-check: no NATS server on 127.0.0.1:4222 and none in the kit (run --prepare on the CPU machine): multi-process parts will fail" >&2
  fi
fi
nvidia-smi -L > "$OUT/gpu.txt" 2>&1 || true
node --version >> "$OUT/gpu.txt"
node --import tsx scripts/gpu-check.ts "$OUT"
