# Shared by scripts/gpu-check.sh and scripts/gpu-train-check.sh (sourced, not run).
# Needs LOGFILE (where log lines go besides stderr) and PY (a Python).

log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$LOGFILE" >&2; }

# step NAME SECONDS COMMAND...: runs COMMAND with a time limit and logs its outcome.
step() {
    local name="$1" limit="$2"; shift 2
    local t0=$SECONDS
    log "$name ..."
    timeout "$limit" "$@"
    local rc=$?
    log "$name: exit $rc after $((SECONDS - t0)) s"
    return $rc
}

# unpack FILE...: a binary may come as FILE.xz (the device tool carries at most 64 MiB).
unpack() {
    local f
    for f in "$@"; do
        [ -n "$f" ] || continue
        if [ ! -x "$f" ] && [ -f "$f.xz" ]; then
            "$PY" -c "import lzma,sys; open(sys.argv[2],'wb').write(lzma.open(sys.argv[1]).read())" "$f.xz" "$f" \
                && chmod +x "$f"
        fi
    done
}
