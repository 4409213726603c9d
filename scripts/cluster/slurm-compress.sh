#!/usr/bin/env bash
# Compress one model on a Slurm cluster: a job array of N tasks, each `tenpak compress --shard
# K/N` into its own part file, then one dependent job that merges the parts into the .tpk a
# single process would have written (byte for byte).
#
#   scripts/cluster/slurm-compress.sh MODEL OUT.tpk N [compress options...]
#
# Example: scripts/cluster/slurm-compress.sh /models/llama-405b /out/llama-405b.tpk 16 --codec int4_g32
#
# MODEL and OUT's folder must be on storage every node sees. Parts go to OUT.parts/ and are
# removed after a successful merge. Set TENPAK (default: tenpak on PATH), SBATCH_OPTS (extra
# sbatch flags: partition, account, time), CPUS (cores per task, default 8), MEM (default 32G),
# and MAX_SHARD_SIZE (e.g. 45GB) to merge into a multi-file set (OUT's index: OUT.index.json).
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
model=$1 out=$2 n=$3
shift 3
tenpak=$(printf "%q" "${TENPAK:-tenpak}")
cpus=${CPUS:-8}
mem=${MEM:-32G}
parts="$out.parts"
mkdir -p "$parts"
# Quote the options once, for the job scripts below.
opts=$(printf '%q ' "$@")
split=""
if [ -n "${MAX_SHARD_SIZE:-}" ]; then
    split="--max-shard-size $(printf '%q' "$MAX_SHARD_SIZE")"
fi
array=$(sbatch --parsable ${SBATCH_OPTS:-} --job-name=tenpak-part --array=1-"$n" \
    --cpus-per-task="$cpus" --mem="$mem" --output="$parts/part-%a.log" --wrap="
set -euo pipefail
$tenpak compress $(printf '%q' "$model") -o $(printf '%q' "$parts")/part-\${SLURM_ARRAY_TASK_ID}.tpk \
    --shard \${SLURM_ARRAY_TASK_ID}/$n --threads $cpus --force -q $opts")
merge=$(sbatch --parsable ${SBATCH_OPTS:-} --job-name=tenpak-merge --dependency=afterok:"$array" \
    --cpus-per-task=1 --mem=4G --output="$parts/merge.log" --wrap="
set -euo pipefail
$tenpak merge $(printf '%q' "$parts")/part-*.tpk -o $(printf '%q' "$out") --force $split
rm -f $(printf '%q' "$parts")/part-*.tpk")
echo "submitted: parts $array (array of $n), merge $merge; logs in $parts/"
