# nearloop-job.sh: the steps of a nearloop Slurm job, shared by nearloop.sbatch and
# nearloop-het.sbatch (sourced, not run). One home for: finding `nearloop`, the job's
# folder and CURVE keys, the broker's endpoint, starting each step and waiting for its
# READY line, and stopping the steps.
#
# Every process runs inside a job step (`srun ... &`, then waited on), never as a plain
# background child of the batch script, so `scancel` reaches all of them: Slurm signals
# every step, then kills what is left after KillWait. The batch script itself only runs
# short commands in the foreground (keygen, grep, sleep).
#
# Settings (environment; sbatch passes the submitter's environment to the job):
#   NEARLOOP            the nearloop command (default: `nearloop` on PATH, as with the
#                       project's venv active, else $SLURM_SUBMIT_DIR/.venv/bin/nearloop)
#   NL_JOB_DIR          the job's folder: keys, step outputs, summary.json
#                       (default: $SLURM_SUBMIT_DIR/nearloop-$SLURM_JOB_ID; on a shared
#                       file system when the job spans nodes, as the keys must reach them)
#   NL_PORT             the broker's tcp port (default: 15000 + job id mod 10000, below
#                       Linux's ephemeral range 32768-60999)
#   NL_DECODER          pymatching | bposd | bp-gpu (default: bp-gpu with --gres=gpu:1 per
#                       decoder task if the job was given GPUs, else pymatching)
#   NL_DECODERS         decoder worker tasks (default 2)
#   NL_READY_TIMEOUT_S  bound on each step's READY line (default 180)
#   NL_DRIVER_ARGS      extra arguments for `nearloop demo`, e.g. "--qec-shots 20000"

nl_fail() {
    echo "error: $*" >&2
    exit 1
}

# nl_setup: NEARLOOP, the job's folder, the broker's host, port and endpoint, the keys.
nl_setup() {
    [[ -n "${SLURM_JOB_ID:-}" ]] || nl_fail "not inside a Slurm job (submit with sbatch)"
    export PYTHONUNBUFFERED=1
    if [[ -z "${NEARLOOP:-}" ]]; then
        NEARLOOP="$(command -v nearloop || true)"
        if [[ -z "$NEARLOOP" && -x "$SLURM_SUBMIT_DIR/.venv/bin/nearloop" ]]; then
            NEARLOOP="$SLURM_SUBMIT_DIR/.venv/bin/nearloop"
        fi
    fi
    [[ -n "$NEARLOOP" && -x "$NEARLOOP" ]] || nl_fail "nearloop not found: activate the \
project's venv before sbatch, or set NEARLOOP=/path/to/nearloop"
    NL_JOB_DIR="${NL_JOB_DIR:-$SLURM_SUBMIT_DIR/nearloop-$SLURM_JOB_ID}"
    mkdir -p "$NL_JOB_DIR"
    chmod 0700 "$NL_JOB_DIR"
    NL_READY_TIMEOUT_S="${NL_READY_TIMEOUT_S:-180}"
    NL_DECODERS="${NL_DECODERS:-2}"
    # The broker runs on the first node of the allocation (of component 0 in a hetjob).
    NL_HOST="$(scontrol show hostnames "${SLURM_JOB_NODELIST_HET_GROUP_0:-$SLURM_JOB_NODELIST}" | head -n 1)"
    NL_PORT="${NL_PORT:-$((15000 + SLURM_JOB_ID % 10000))}"
    NL_ENDPOINT="tcp://$NL_HOST:$NL_PORT"
    nl_keys
    NL_STEP_PIDS=()
    trap nl_stop_steps EXIT
    trap 'exit 143' TERM INT
    echo "nearloop job $SLURM_JOB_ID: broker at $NL_ENDPOINT, folder $NL_JOB_DIR"
}

# nl_keys: a CURVE key pair per party in the job's folder, and the allow-lists.
nl_keys() {
    local k="$NL_JOB_DIR/keys"
    "$NEARLOOP" keygen "$k/broker" broker >/dev/null
    "$NEARLOOP" keygen "$k/clients" driver >/dev/null
    "$NEARLOOP" keygen "$k/qpu-workers" qpu >/dev/null
    "$NEARLOOP" keygen "$k/decoder-workers" decoder >/dev/null
    NL_BROKER_KEY="$k/broker/broker.key"
}

# nl_decoder: which decoder the decoder step runs, and its srun options (NL_DECODER_SRUN).
nl_decoder() {
    NL_DECODER_SRUN=()
    if [[ -z "${NL_DECODER:-}" ]]; then
        if nl_job_has_gpus; then NL_DECODER=bp-gpu; else NL_DECODER=pymatching; fi
    fi
    if [[ "$NL_DECODER" == bp-gpu ]]; then
        NL_DECODER_SRUN=(--gres=gpu:1)
    fi
}

# nl_job_has_gpus: true if Slurm allocated GPUs to the job (any component): its GRES as
# `scontrol show job -d` details them per node, or its GPU request (--gres=gpu:N,
# --gpus*), in the TresPer* fields.
nl_job_has_gpus() {
    scontrol show job -d "$SLURM_JOB_ID" | grep -Eq '(GRES|TresPer[A-Za-z]+)=[^ ]*gpu'
}

# nl_step NAME SRUN_OPTIONS... -- COMMAND...: start a step in the background, its
# tasks' output in $NL_JOB_DIR/NAME-TASK.out and .err.
nl_step() {
    local name="$1" opts=()
    shift
    while [[ "$1" != -- ]]; do opts+=("$1"); shift; done
    shift
    srun --overlap --job-name="nl-$name" --kill-on-bad-exit=1 "${opts[@]}" \
        --output="$NL_JOB_DIR/$name-%t.out" --error="$NL_JOB_DIR/$name-%t.err" "$@" &
    NL_STEP_PIDS+=("$!")
    NL_LAST_PID=$!
}

# nl_wait_ready NAME TASKS PID: wait until each of the step's TASKS tasks printed its
# READY line; fails if the step ends first or after NL_READY_TIMEOUT_S.
nl_wait_ready() {
    local name="$1" tasks="$2" pid="$3" t
    local deadline=$((SECONDS + NL_READY_TIMEOUT_S))
    for ((t = 0; t < tasks; t++)); do
        until grep -qs '^READY' "$NL_JOB_DIR/$name-$t.out"; do
            if ! kill -0 "$pid" 2>/dev/null; then
                tail -n 5 "$NL_JOB_DIR/$name-$t.err" >&2 2>/dev/null || true
                nl_fail "step $name ended before task $t printed READY; see $NL_JOB_DIR/$name-$t.err"
            fi
            ((SECONDS < deadline)) || nl_fail "step $name: no READY from task $t within \
${NL_READY_TIMEOUT_S} s; see $NL_JOB_DIR/$name-$t.err"
            sleep 0.2
        done
    done
    echo "step $name ready ($tasks task(s)) at ${SECONDS} s"
}

# nl_servers SRUN_OPTIONS...: the broker step, then the qpu worker's step, on the first
# node (of the options' group). The broker binds every interface, with CURVE.
nl_servers() {
    local k="$NL_JOB_DIR/keys"
    nl_step broker "$@" --nodes=1 --ntasks=1 --nodelist="$NL_HOST" -- \
        "$NEARLOOP" broker --bind "tcp://*:$NL_PORT" \
        --curve-secret "$k/broker/broker.key_secret" --allow-clients "$k/clients" \
        --allow-workers "qpu=$k/qpu-workers" --allow-workers "decode=$k/decoder-workers"
    nl_wait_ready broker 1 "$NL_LAST_PID"
    nl_step qpu "$@" --nodes=1 --ntasks=1 --nodelist="$NL_HOST" --gres=qpu:1 -- \
        "$NEARLOOP" qpu --connect "$NL_ENDPOINT" --curve "$k/qpu-workers/qpu.key_secret" "$NL_BROKER_KEY"
    nl_wait_ready qpu 1 "$NL_LAST_PID"
}

# nl_decoders SRUN_OPTIONS...: NL_DECODERS decoder workers in one step.
nl_decoders() {
    local k="$NL_JOB_DIR/keys"
    nl_decoder
    echo "decoders: $NL_DECODERS x $NL_DECODER ${NL_DECODER_SRUN[*]}"
    local device=()
    [[ "$NL_DECODER" == bp-gpu ]] && device=(--device cuda)
    nl_step decoder "$@" --ntasks="$NL_DECODERS" "${NL_DECODER_SRUN[@]}" -- \
        "$NEARLOOP" decoders --connect "$NL_ENDPOINT" --decoder "$NL_DECODER" "${device[@]}" \
        --curve "$k/decoder-workers/decoder.key_secret" "$NL_BROKER_KEY"
    nl_wait_ready decoder "$NL_DECODERS" "$NL_LAST_PID"
}

# nl_driver SRUN_OPTIONS...: VQE through the qpu service, then a QEC stream through the
# decoders (`nearloop demo --connect`), over tcp with CURVE; its output is the job's.
# Returns the driver's exit status: 0 when VQE is within 1.6 mHa and the stream lost 0.
nl_driver() {
    local k="$NL_JOB_DIR/keys" extra=()
    read -r -a extra <<<"${NL_DRIVER_ARGS:-}"
    srun --overlap --job-name=nl-driver --nodes=1 --ntasks=1 "$@" \
        "$NEARLOOP" demo --connect "$NL_ENDPOINT" \
        --curve "$k/clients/driver.key_secret" "$NL_BROKER_KEY" \
        --json "$NL_JOB_DIR/summary.json" "${extra[@]}"
}

# nl_stop_steps: end this job's steps: SIGTERM to their tasks (each server exits on it),
# a bounded wait for their sruns, then cancel any step still running.
nl_stop_steps() {
    local pid step deadline=$((SECONDS + 30))
    for step in $(nl_running_steps); do scancel --quiet --signal=TERM "$step" || true; done
    for pid in "${NL_STEP_PIDS[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
    done
    for step in $(nl_running_steps); do scancel --quiet "$step" || true; done
    NL_STEP_PIDS=()
}

# nl_running_steps: the ids (JOB.STEP) of this job's steps still running, but the batch
# script's own.
nl_running_steps() {
    squeue -h -s -j "$SLURM_JOB_ID" -o %i 2>/dev/null | grep -Ev '\.(batch|extern)$' || true
}
