#!/bin/bash
# GPU check of tray on a machine with NVIDIA GPUs: bash scripts/gpu-check/run.sh
# Brings up local clusters (head only; head + worker agent; agents limited by a UUID prefix
# and by a MIG name in CUDA_VISIBLE_DEVICES), submits gpucheck.ts to each and prints PASS/FAIL
# per check; nvidia-smi's answers and the job logs go to $OUT (default /tmp/gpucheck-out).
# Needs node 20 on the PATH (or node.xz beside this script, unpacked to /tmp/nodebin), a built
# tray (TRAY_DIR, default: this checkout) and, for the PyTorch checks, python3 with torch.
set -u
D=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT:-/tmp/gpucheck-out}; mkdir -p "$OUT"
export TRAY_HOME=${TRAY_HOME:-/tmp/trayhome}
export TRAY_INFEASIBLE_GRACE_MS=3000
mkdir -p "$TRAY_HOME"
exec > >(tee "$OUT/run.log") 2>&1
T0=$(date +%s.%N)
ts() { echo "== [$(awk "BEGIN{printf \"%.1f\", $(date +%s.%N)-$T0}")s] $*"; }
if [ -f "$D/node.xz" ] && [ -z "${NODE_BIN:-}" ]; then
  mkdir -p /tmp/nodebin
  if command -v xz >/dev/null; then xz -dc "$D/node.xz" > /tmp/nodebin/node
  else python3 -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" "$D/node.xz" /tmp/nodebin/node; fi
  chmod +x /tmp/nodebin/node; export PATH=/tmp/nodebin:$PATH
fi
ts "node $(node --version) at $(command -v node)"
TRAY_DIR=${TRAY_DIR:-$(cd "$D/../.." && pwd)}
TRAY="node $TRAY_DIR/bin/tray.js"
{
  echo "### nvidia-smi"; nvidia-smi
  echo "### nvidia-smi -L"; nvidia-smi -L
  echo "### nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits (exact bytes)"
  nvidia-smi --query-gpu=index,name,memory.total --format=csv,noheader,nounits > /tmp/query.csv; echo "rc=$?"
  cat /tmp/query.csv; od -c /tmp/query.csv | head -20
  echo "### nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits (exact bytes)"
  nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits > /tmp/query2.csv; echo "rc=$?"
  cat /tmp/query2.csv; od -c /tmp/query2.csv | head -20
  echo "### extra fields"
  nvidia-smi --query-gpu=index,uuid,pci.bus_id,mig.mode.current,memory.used,driver_version,compute_cap --format=csv
  echo "### env"; env | grep -iE 'cuda|nvidia|gpu' | sort
  echo "### os"; uname -a; head -3 /etc/os-release; nproc; free -g | head -2; df -h /dev/shm | tail -1
  echo "### torch"; python3 -c "import torch; print(torch.__version__, torch.cuda.device_count(), torch.cuda.get_device_name(0))"
} > "$OUT/smi.txt" 2>&1
ts "smi captured"; cat /tmp/query2.csv
GPUS=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU ')
ts "real GPU count $GPUS"

ts "up head-only"
timeout 60 $TRAY up "$D/head.yaml" -y; echo "up rc=$?"
timeout 30 $TRAY status --cluster gpucheck --json > "$OUT/status1.json"; echo "status rc=$?"
ts "submit head-only"
timeout 150 $TRAY submit --cluster gpucheck "$D/gpucheck.ts" -- "$GPUS" head > "$OUT/job1.log" 2>&1; echo "submit1 rc=$?"
cat "$OUT/job1.log" | grep -E '^(PASS|FAIL|SUMMARY)|rror' | cut -c1-400
timeout 60 $TRAY down "$D/head.yaml" -y; echo "down rc=$?"

ts "up head+worker"
timeout 60 $TRAY up "$D/workers.yaml" -y; echo "up2 rc=$?"
timeout 30 $TRAY status --cluster gpucheck2 --json > "$OUT/status2.json"; echo "status2 rc=$?"
ts "submit workers"
timeout 90 $TRAY submit --cluster gpucheck2 "$D/gpucheck.ts" -- "$GPUS" workers > "$OUT/job2.log" 2>&1; echo "submit2 rc=$?"
cat "$OUT/job2.log" | grep -E '^(PASS|FAIL|SUMMARY)|rror' | cut -c1-400
timeout 60 $TRAY down "$D/workers.yaml" -y; echo "down2 rc=$?"
UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1 | tr -d ' ')
ts "up head-only, CUDA_VISIBLE_DEVICES=${UUID:0:12} (a UUID prefix)"
CUDA_VISIBLE_DEVICES=${UUID:0:12} timeout 60 $TRAY up "$D/head.yaml" -y; echo "up3 rc=$?"
timeout 30 $TRAY status --cluster gpucheck --json > "$OUT/status3.json"; echo "status3 rc=$?"
timeout 150 $TRAY submit --cluster gpucheck "$D/gpucheck.ts" -- "$GPUS" head > "$OUT/job3.log" 2>&1; echo "submit3 rc=$?"
cat "$OUT/job3.log" | grep -E '^(PASS|FAIL|SUMMARY)|rror' | cut -c1-400
timeout 60 $TRAY down "$D/head.yaml" -y; echo "down3 rc=$?"
ts "up head-only, CUDA_VISIBLE_DEVICES=MIG-${UUID:4:8} (no such slice)"
CUDA_VISIBLE_DEVICES=MIG-${UUID:4:8} timeout 60 $TRAY up "$D/head.yaml" -y; echo "up4 rc=$?"
timeout 30 $TRAY status --cluster gpucheck --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const n=JSON.parse(s).nodes[0];console.log("MIG case: GPU resource", n.resources.GPU ?? 0, "gpus", JSON.stringify(n.gpus ?? []))})'
timeout 60 $TRAY down "$D/head.yaml" -y; echo "down4 rc=$?"
ts "done"
ls -la "$OUT"
