#!/usr/bin/env bash
# Run powerpool as a Slurm job array: one shard per array task, then one merge.
#
#   scripts/slurm-array.sh submit TASK START..END N OUTDIR [RESULT]
#       submits an array of N tasks (0..N-1), each running `map --shard K/N` on one node into
#       OUTDIR/shard-K.bin, then a merge job that runs once all of them succeeded and writes
#       RESULT (default OUTDIR/result.txt).
#
# Slurm runs this same script for each array task (`shard` mode) and for the merge (`merge`
# mode). `shard` mode reads SLURM_ARRAY_TASK_ID and the array's size from Slurm's environment,
# so it also runs by hand: SLURM_ARRAY_TASK_ID=3 SLURM_ARRAY_TASK_COUNT=8 scripts/slurm-array.sh
# shard square 0..1000000 out/. The powerpool binary is $POWERPOOL, else `powerpool` in PATH.
#SBATCH --job-name=powerpool
#SBATCH --cpus-per-task=8
set -euo pipefail
POWERPOOL=${POWERPOOL:-powerpool}

usage() { sed -n '2,13p' "$0" >&2; exit 2; }

mode=${1:-}
case "$mode" in
  submit)
    [ $# -ge 5 ] || usage
    task=$2 range=$3 n=$4 out=$5 result=${6:-$5/result.txt}
    mkdir -p "$out"
    array=$(sbatch --parsable --array="0-$((n - 1))" "$0" shard "$task" "$range" "$out")
    sbatch --dependency="afterok:$array" "$0" merge "$out" "$result"
    ;;
  shard)
    [ $# -eq 4 ] || usage
    task=$2 range=$3 out=$4
    k=${SLURM_ARRAY_TASK_ID:?not in a Slurm array task}
    n=${SLURM_ARRAY_TASK_COUNT:-$((SLURM_ARRAY_TASK_MAX - SLURM_ARRAY_TASK_MIN + 1))}
    # bin shards merge into any format; the workers use the cores Slurm gave this task.
    exec "$POWERPOOL" map "$task" --range "$range" --format bin --shard "$k/$n" \
      --workers "${SLURM_CPUS_PER_TASK:-$(nproc)}" --output "$out/shard-$k.bin"
    ;;
  merge)
    [ $# -eq 3 ] || usage
    out=$2 result=$3
    exec "$POWERPOOL" merge "$out"/shard-*.bin --format lines --output "$result"
    ;;
  *) usage ;;
esac
