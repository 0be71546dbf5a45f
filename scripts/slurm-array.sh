#!/usr/bin/env bash
# Runs powerpool as a Slurm job array: one `map --shard K/N` per array task, then one merge job.
# The whole story (shared filesystem, environment, re-runs) is in docs/clusters.md.
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: slurm-array.sh submit [--fresh] [--format lines|sum|bin] TASK START..END N OUTDIR [RESULT]
       slurm-array.sh status OUTDIR
       slurm-array.sh rerun OUTDIR [K...]

submit  queues an array of N shard jobs (K = 0..N-1, each `map --shard K/N` into
        OUTDIR/shard-K.bin) and a merge job that runs once all of them succeeded (and is
        cancelled if one fails), writing RESULT (default OUTDIR/result.txt, result.bin for bin).
        Prints both job ids and where the result will be. Refuses an OUTDIR that holds an
        earlier run's shards or result; --fresh deletes them first. OUTDIR must be on a
        filesystem that every node shares. CPUS_PER_TASK (default 1) cores per shard job.
status  names the shards that are done, queued, running, missing or failed, and the merge's
        state. Exit 0: the result is there; 3: still queued or running; 1: something failed.
rerun   resubmits the missing shards K (default: every missing one that is not queued) and a
        new merge. A shard that is complete is never recomputed nor deleted.

Run by Slurm (or by hand, e.g. SLURM_ARRAY_TASK_ID=1 slurm-array.sh shard square 0..1000 4 out):
       slurm-array.sh shard TASK START..END N OUTDIR [FORMAT]   K is $SLURM_ARRAY_TASK_ID
       slurm-array.sh merge N OUTDIR RESULT [FORMAT]
The powerpool binary is $POWERPOOL, else `powerpool` in PATH (submit passes its absolute path).
EOF
  exit 2
}

die() {
  echo "slurm-array.sh: $*" >&2
  exit 1
}

JOBFILE=job.txt

is_count() { [[ $1 =~ ^[1-9][0-9]{0,8}$ ]]; }
is_index() { [[ $1 =~ ^(0|[1-9][0-9]{0,8})$ ]]; }
is_shard_of() { is_index "$1" && [ "$1" -lt "$2" ]; }
check_format() {
  case $1 in lines | sum | bin) ;; *) die "unknown format '$1' (lines, sum or bin)" ;; esac
}
# bin shards merge into any format; sum shards (32 bytes each) only into a sum.
shard_format() { if [ "$1" = sum ]; then echo sum; else echo bin; fi; }
# Slurm's `%` patterns and a newline would corrupt --output paths and the job file.
check_path() {
  case $1 in *%* | *$'\n'*) die "$2 '$1' holds '%' or a newline: choose another path" ;; esac
}

# The submission's record, OUTDIR/job.txt: key=value lines; `array` and `merge` repeat, one
# pair per submission (the first, then each rerun), the last one current.
read_job() {
  local out=$1 key value
  [ -f "$out/$JOBFILE" ] || die "$out/$JOBFILE not found: not an OUTDIR that 'submit' wrote"
  arrays=() merge_id=''
  while IFS='=' read -r key value; do
    case $key in
      task) task=$value ;;
      range) range=$value ;;
      n) n=$value ;;
      format) format=$value ;;
      result) result=$value ;;
      cpus) cpus=$value ;;
      array) arrays+=("$value") ;;
      merge) merge_id=$value ;;
    esac
  done <"$out/$JOBFILE"
}

# The state of every job and array task of this run that Slurm still knows (finished ones
# are forgotten after MinJobAge, 300 s by default): fills states["<array>_<K>"] and states[<job>].
declare -A states=()
query_states() {
  local id line
  command -v squeue >/dev/null 2>&1 || return 0
  for id in "$@"; do
    while read -r line; do
      [ -n "$line" ] && states[${line% *}]=${line##* }
    done < <(squeue -h -r -t all -j "$id" -o '%i %T' 2>/dev/null || true)
  done
}
is_queued() { case ${1:-} in PENDING | RUNNING | CONFIGURING | COMPLETING | SUSPENDED | REQUEUED*) return 0 ;; esac; return 1; }

# The latest array task that ran shard K, and its state ('' when Slurm no longer knows it).
shard_state() {
  local k=$1 i
  task_id='' task_state=''
  for ((i = ${#arrays[@]} - 1; i >= 0; i--)); do
    if [ -n "${states[${arrays[i]}_$k]:-}" ]; then
      task_id=${arrays[i]}_$k task_state=${states[${arrays[i]}_$k]}
      return
    fi
  done
}

# Submits the shards `ks` (comma-separated) as one array and a merge after them; `after` adds
# dependencies on tasks of earlier arrays that are still queued. Appends both ids to the record.
submit_jobs() {
  local out=$1 ks=$2 after=$3 array new_merge
  # The jobs get this shell's environment (PATH, POWERPOOL, ...): --export=ALL, said explicitly
  # because a site may default to less (SBATCH_EXPORT).
  array=$(sbatch --parsable --export=ALL --job-name=powerpool-shards --array="$ks" \
    --cpus-per-task="$cpus" --output="$out/logs/shard-%a.out" --open-mode=append \
    "$script" shard "$task" "$range" "$n" "$out" "$format") || die "sbatch refused the shard array"
  array=${array%%;*}
  # --kill-on-invalid-dep: when a shard fails, the merge is cancelled instead of pending forever.
  if ! new_merge=$(sbatch --parsable --export=ALL --job-name=powerpool-merge \
    --dependency="afterok:$array$after" --kill-on-invalid-dep=yes --cpus-per-task=1 \
    --output="$out/logs/merge.out" --open-mode=append \
    "$script" merge "$n" "$out" "$result" "$format"); then
    scancel "$array" || true
    die "sbatch refused the merge job; shard array $array cancelled"
  fi
  new_merge=${new_merge%%;*}
  printf 'array=%s\nmerge=%s\n' "$array" "$new_merge" >>"$out/$JOBFILE"
  echo "shards: array job $array (shards ${ks//,/ } of $n, $cpus CPU(s) each); logs in $out/logs/"
  local earlier=${after#:}
  echo "merge:  job $new_merge, runs once they all succeeded${earlier:+ (and ${earlier//:/, } of an earlier submission)}, cancelled if one fails"
  echo "result: $result"
  echo "status: $script status $out"
}

need_slurm() {
  local tool
  for tool in sbatch squeue scancel; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found: run this on a Slurm submit host"
  done
}

# The absolute path of the powerpool binary, checked to run and to know TASK, before anything
# is queued (otherwise every job fails on a compute node, each in its own log).
resolve_powerpool() {
  local pp
  pp=$(command -v "${POWERPOOL:-powerpool}") ||
    die "powerpool not found in PATH (or set POWERPOOL=/path/to/powerpool); nothing submitted"
  case $pp in /*) ;; *) pp=$(cd "$(dirname "$pp")" && pwd -P)/$(basename "$pp") ;; esac
  export POWERPOOL=$pp
}

script=$0
mode=${1:-}
[ $# -gt 0 ] && shift
case $mode in
  submit)
    fresh=false format=lines
    while [ $# -gt 0 ]; do
      case $1 in
        --fresh) fresh=true ;;
        --format) [ $# -ge 2 ] || usage; format=$2; shift ;;
        --format=*) format=${1#--format=} ;;
        -h | --help) usage ;;
        -*) die "unknown option '$1'" ;;
        *) break ;;
      esac
      shift
    done
    [ $# -eq 4 ] || [ $# -eq 5 ] || usage
    task=$1 range=$2 n=$3 out=$4 result=${5:-}
    cpus=${CPUS_PER_TASK:-1}
    check_format "$format"
    is_count "$n" || die "N must be a positive integer, not '$n'"
    is_count "$cpus" || die "CPUS_PER_TASK must be a positive integer, not '$cpus'"
    [[ $range =~ ^(-?[0-9][0-9_]*)\.\.(-?[0-9][0-9_]*)$ ]] ||
      die "the range must be START..END (integers), not '$range'"
    start=${BASH_REMATCH[1]} end=${BASH_REMATCH[2]}
    need_slurm
    resolve_powerpool
    # Empty ranges: checks the task and both bounds without computing anything.
    for bound in "$start" "$end"; do
      "$POWERPOOL" map "$task" --range "$bound..$bound" --format bin -q >/dev/null ||
        die "powerpool refused the job (above); nothing submitted"
    done
    check_path "$out" OUTDIR
    mkdir -p "$out"
    out=$(cd "$out" && pwd -P)
    if [ -z "$result" ]; then
      result=$out/result.txt
      [ "$format" = bin ] && result=$out/result.bin
    fi
    check_path "$result" RESULT
    mkdir -p "$(dirname "$result")"
    result=$(cd "$(dirname "$result")" && pwd -P)/$(basename "$result")
    # An earlier run's files would mislead (a stale result) or mix into this run (stale shards).
    stale=()
    for f in "$out/$JOBFILE" "$out"/shard-*.bin "$result"; do
      [ -e "$f" ] && stale+=("$f")
    done
    if [ "${#stale[@]}" -gt 0 ]; then
      $fresh || die "$out holds an earlier run's files (${stale[*]}): use another OUTDIR, or submit --fresh to delete them"
      if [ -f "$out/$JOBFILE" ]; then
        (
          read_job "$out"
          query_states "${arrays[@]}" ${merge_id:+"$merge_id"}
          for id in "${!states[@]}"; do
            is_queued "${states[$id]}" && die "job $id of the earlier run in $out is still queued: scancel it first"
          done
          true
        )
      fi
      rm -f -- "${stale[@]}" "$out"/.shard-*.tmp
      rm -rf -- "$out/logs"
    fi
    mkdir -p "$out/logs"
    printf 'task=%s\nrange=%s\nn=%s\nformat=%s\nresult=%s\ncpus=%s\n' \
      "$task" "$range" "$n" "$format" "$result" "$cpus" >"$out/$JOBFILE"
    submit_jobs "$out" "0-$((n - 1))" ""
    ;;

  status)
    [ $# -eq 1 ] || usage
    out=$1
    read_job "$out"
    query_states "${arrays[@]}" ${merge_id:+"$merge_id"}
    echo "job: $task $range in $n shards, merged as $format into $result"
    done_count=0 active=false missing=()
    for ((k = 0; k < n; k++)); do
      if [ -e "$out/shard-$k.bin" ]; then
        done_count=$((done_count + 1))
        continue
      fi
      shard_state "$k"
      if is_queued "$task_state"; then
        active=true
        echo "shard $k: ${task_state,,} (job $task_id)"
      else
        missing+=("$k")
        echo "shard $k: missing: ${task_id:+job $task_id }${task_state:-no longer queued}; log $out/logs/shard-$k.out"
      fi
    done
    echo "shards done: $done_count of $n"
    merge_state=${states[$merge_id]:-}
    if [ -e "$result" ]; then
      echo "merge: done, result in $result"
      exit 0
    elif is_queued "$merge_state"; then
      echo "merge: ${merge_state,,} (job $merge_id)"
    else
      echo "merge: not done: job $merge_id ${merge_state:-no longer queued}; log $out/logs/merge.out"
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
      echo "missing shards: ${missing[*]}; re-run them and the merge with: $script rerun $out ${missing[*]}"
      exit 1
    fi
    $active && exit 3
    is_queued "$merge_state" && exit 3
    echo "every shard is done; re-run the merge with: $script rerun $out"
    exit 1
    ;;

  rerun)
    [ $# -ge 1 ] || usage
    dir=$1
    shift
    need_slurm
    out=$(cd "$dir" && pwd -P) || die "no OUTDIR '$dir'"
    read_job "$out"
    resolve_powerpool
    query_states "${arrays[@]}" ${merge_id:+"$merge_id"}
    [ -e "$result" ] && die "$result is already there: nothing to re-run (submit --fresh starts over)"
    ks=("$@")
    if [ $# -eq 0 ]; then
      for ((k = 0; k < n; k++)); do
        shard_state "$k"
        [ -e "$out/shard-$k.bin" ] || is_queued "$task_state" || ks+=("$k")
      done
    fi
    for k in "${ks[@]}"; do
      is_shard_of "$k" "$n" || die "K must be 0 to $((n - 1)), not '$k'"
      [ -e "$out/shard-$k.bin" ] && die "shard $k is complete ($out/shard-$k.bin): it is never recomputed"
      shard_state "$k"
      is_queued "$task_state" && die "shard $k is still queued as job $task_id"
    done
    # Shards still queued from an earlier submission: the new merge waits for them too.
    after=''
    for ((k = 0; k < n; k++)); do
      [ -e "$out/shard-$k.bin" ] && continue
      shard_state "$k"
      is_queued "$task_state" && after+=":$task_id"
    done
    # An earlier merge still pending is left alone: its dependency failed with the shards that
    # are re-run, so Slurm cancels it (--kill-on-invalid-dep) once its array has ended.
    if [ "${#ks[@]}" -eq 0 ] && is_queued "${states[$merge_id]:-}"; then
      die "the merge (job $merge_id) is still queued: nothing to re-run"
    fi
    if [ "${#ks[@]}" -eq 0 ]; then
      # No shard to compute: only the merge runs again, after the shards still queued, if any.
      deps=()
      [ -z "$after" ] || deps=(--dependency="afterok:${after#:}" --kill-on-invalid-dep=yes)
      merge_only=$(sbatch --parsable --export=ALL --job-name=powerpool-merge "${deps[@]}" \
        --cpus-per-task=1 --output="$out/logs/merge.out" --open-mode=append \
        "$script" merge "$n" "$out" "$result" "$format") || die "sbatch refused the merge job"
      merge_only=${merge_only%%;*}
      echo "merge=$merge_only" >>"$out/$JOBFILE"
      pending=${after#:}
      echo "merge:  job $merge_only${pending:+, runs once ${pending//:/, } succeeded}"
      echo "result: $result"
      exit 0
    fi
    joined=$(
      IFS=,
      echo "${ks[*]}"
    )
    submit_jobs "$out" "$joined" "$after"
    ;;

  shard)
    [ $# -eq 4 ] || [ $# -eq 5 ] || usage
    task=$1 range=$2 n=$3 out=$4 format=${5:-lines}
    k=${SLURM_ARRAY_TASK_ID:?not in a Slurm array task: set SLURM_ARRAY_TASK_ID to K}
    check_format "$format"
    is_count "$n" || die "N must be a positive integer, not '$n'"
    is_shard_of "$k" "$n" || die "K ($k, from SLURM_ARRAY_TASK_ID) must be 0 to N-1 = $((n - 1))"
    if [ -f "$out/$JOBFILE" ]; then
      want=$(printf 'task=%s range=%s n=%s format=%s' "$task" "$range" "$n" "$format")
      have=$(
        read_job "$out"
        printf 'task=%s range=%s n=%s format=%s' "$task" "$range" "$n" "$format"
      )
      [ "$want" = "$have" ] || die "$out belongs to another job ($have), not $want"
    fi
    file=$out/shard-$k.bin
    [ -e "$file" ] && die "$file exists: a complete shard is never overwritten (delete it to recompute shard $k)"
    # The workers use the cores Slurm granted this task (all of the machine's, run by hand).
    workers=${SLURM_CPUS_PER_TASK:-${SLURM_CPUS_ON_NODE:-$(nproc)}}
    exec "${POWERPOOL:-powerpool}" map "$task" --range "$range" --format "$(shard_format "$format")" \
      --shard "$k/$n" --workers "$workers" --output "$file"
    ;;

  merge)
    [ $# -eq 3 ] || [ $# -eq 4 ] || usage
    n=$1 out=$2 result=$3 format=${4:-lines}
    check_format "$format"
    is_count "$n" || die "N must be a positive integer, not '$n'"
    # Every shard by name, so a missing one is named by merge (a glob would just skip it).
    shards=()
    for ((k = 0; k < n; k++)); do shards+=("$out/shard-$k.bin"); done
    exec "${POWERPOOL:-powerpool}" merge "${shards[@]}" --format "$format" --output "$result"
    ;;

  -h | --help | help) usage ;;
  *) usage ;;
esac
