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

# One round: up <yaml> (with the given CUDA_VISIBLE_DEVICES, if any), status, submit the check
# job in <mode> (head|workers), down. Usage: round <n> <yaml> <cluster> <mode> [CUDA_VISIBLE_DEVICES]
round() {
  local n=$1 yaml=$2 cluster=$3 mode=$4
  ts "round $n: $mode ${5+CUDA_VISIBLE_DEVICES=$5}"
  if [ $# -ge 5 ]; then CUDA_VISIBLE_DEVICES=$5 timeout 60 $TRAY up "$yaml" -y; else timeout 60 $TRAY up "$yaml" -y; fi
  echo "up$n rc=$?"
  timeout 30 $TRAY status --cluster "$cluster" --json > "$OUT/status$n.json"; echo "status$n rc=$?"
  timeout 150 $TRAY submit --cluster "$cluster" "$D/gpucheck.ts" -- "$GPUS" "$mode" > "$OUT/job$n.log" 2>&1; echo "submit$n rc=$?"
  grep -E '^(PASS|FAIL|SUMMARY)|rror' "$OUT/job$n.log" | cut -c1-400
  timeout 60 $TRAY down "$yaml" -y; echo "down$n rc=$?"
}

round 1 "$D/head.yaml" gpucheck head
round 2 "$D/workers.yaml" gpucheck2 workers
UUID=$(nvidia-smi --query-gpu=uuid --format=csv,noheader | head -1 | tr -d ' ')
round 3 "$D/head.yaml" gpucheck head "${UUID:0:12}" # a UUID prefix
ts "up head-only, CUDA_VISIBLE_DEVICES=MIG-${UUID:4:8} (no such slice): no GPU offered"
CUDA_VISIBLE_DEVICES=MIG-${UUID:4:8} timeout 60 $TRAY up "$D/head.yaml" -y; echo "up4 rc=$?"
timeout 30 $TRAY status --cluster gpucheck --json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>{const n=JSON.parse(s).nodes[0];console.log("MIG case: GPU resource", n.resources.GPU ?? 0, "gpus", JSON.stringify(n.gpus ?? []))})'
timeout 60 $TRAY down "$D/head.yaml" -y; echo "down4 rc=$?"
ts "done"
ls -la "$OUT"
