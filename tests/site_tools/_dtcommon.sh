# shellcheck shell=bash
# Shared logic of the datamover emulation (REFERENCE.md section 1), sourced by
# the dt* scripts in this directory.  The tools run on the real (test) Slurm
# cluster that SLURM_CONF points at, in partition "datamover".
#
# Transfer commands (dtcp, dtmv, dtrm, dtls, dtrsync, dttar, dtwget):
#   * --blocking, --account=ACCOUNT and --time=TIME are accepted anywhere among
#     the arguments and removed (also after "--", as a plain scanner on the
#     site would); every other argument goes to the wrapped tool unchanged and
#     in order.  Only the "=" forms are recognised.
#   * opt-in DT_BLOCKING_LAST_ONLY=1 (as taurus_datamover's mock cluster did):
#     --blocking counts only as the last argument; anywhere else it goes to the
#     tool unchanged (so e.g. cp fails on it).
#   * blocking (dtls always, the others with --blocking):
#       exec srun --pty -p datamover ... -J dtNAME TOOL ARGS...
#     Without a terminal srun prints its "Inappropriate ioctl for device" /
#     "disregarding --pty option" noise on stderr, as on the real site; the
#     exit code is the tool's.
#   * non-blocking: sbatch prints "Submitted batch job N" and its exit code is
#     the command's.  The job runs _dtexec.sh (exec "$@") with TOOL ARGS... as
#     its arguments, so no shell quoting is involved anywhere.
#     The job's stdout+stderr go to $DT_LOG_DIR/dt-<jobid>.out where
#     DT_LOG_DIR is, in this order: $TAURUS_TEST_DT_LOGDIR if set; else the
#     directory "dt-logs" next to $SLURM_CONF (i.e. inside the test cluster's
#     directory, so that parallel clusters, whose job ids all start at 1, do
#     not share files); else ${TMPDIR:-/tmp}.

_DT_DIR=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")

# dt_log_dir: print the directory for non-blocking jobs' output files.
dt_log_dir() {
    if [[ -n ${TAURUS_TEST_DT_LOGDIR:-} ]]; then
        printf '%s\n' "$TAURUS_TEST_DT_LOGDIR"
    elif [[ -n ${SLURM_CONF:-} ]]; then
        printf '%s\n' "$(dirname -- "$SLURM_CONF")/dt-logs"
    else
        printf '%s\n' "${TMPDIR:-/tmp}"
    fi
}

# dt_transfer NAME TOOL DEFAULT_BLOCKING(0|1) ARGS...
dt_transfer() {
    local name=$1 tool=$2 blocking=$3
    shift 3
    local -a args=() slurm_opts=()
    local arg last_only=${DT_BLOCKING_LAST_ONLY:-0} left=$#
    for arg in "$@"; do
        left=$((left - 1))
        if [[ $arg == --blocking && $last_only == 1 && $left -gt 0 ]]; then
            args+=("$arg")
            continue
        fi
        case $arg in
            --blocking) blocking=1 ;;
            --account=*) slurm_opts+=("$arg") ;;
            --time=*) slurm_opts+=("$arg") ;;
            *) args+=("$arg") ;;
        esac
    done
    if ((blocking)); then
        exec srun --pty -p datamover "${slurm_opts[@]}" -J "$name" "$tool" "${args[@]}"
    fi
    local log_dir
    log_dir=$(dt_log_dir)
    mkdir -p -- "$log_dir" || exit 1
    exec sbatch -p datamover "${slurm_opts[@]}" -J "$name" -o "$log_dir/dt-%j.out" \
        "$_DT_DIR/_dtexec.sh" "$tool" "${args[@]}"
}

# dt_queue ARGS...: the user's jobs in partition datamover.
dt_queue() {
    exec squeue -u "${USER:-$(id -un)}" -p datamover "$@"
}
