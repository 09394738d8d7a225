#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for running and testing the Slurm profile
# (profiles/slurm) end to end: munge, slurmctld and slurmd on localhost (127.0.0.1 only).
#
#   sudo bash scripts/slurm-local.sh up       # write /etc/slurm/slurm.conf, start the daemons, wait
#   sudo bash scripts/slurm-local.sh status   # daemons, node state, queue (exit 0 only when usable)
#   sudo bash scripts/slurm-local.sh down     # stop what `up` started
#
# Needs root and Debian's packages (`apt-get install -y slurm-wlm munge`; Slurm 22.05 on Debian 12).
# `up` is idempotent: it (re)writes /etc/slurm/slurm.conf only when its content changes, starts only
# the daemons that are not running, and returns when the node accepts jobs. The node is described
# by `slurmd -C` (this host's real CPU count and memory), so jobs that ask for more than the machine
# has are refused, as on a real cluster. One partition, `local` (the default). Memory is a consumable
# resource (SelectTypeParameters=CR_Core_Memory) but not enforced (no cgroups here).
#
# There is no accounting database (slurmdbd): `sacct` does not work, so job state is read with
# `squeue`, which keeps finished jobs for MinJobAge=600 s (profiles/slurm sets
# `slurm-status-command: squeue`). A file /etc/slurm/slurm.conf that this script did not write
# is never overwritten (set SLURM_LOCAL_FORCE=1 to replace it; the old one is kept as .bak).
# Ports: SLURM_LOCAL_CTLD_PORT (6817) and SLURM_LOCAL_SLURMD_PORT (6818), bound to 127.0.0.1.
# Daemon logs: /var/log/slurm/{slurmctld,slurmd}.log; munge's: /var/log/munge/munged.log.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by modeconn scripts/slurm-local.sh"
STATE=/var/lib/slurm
LOGS=/var/log/slurm
RUN=/run/modeconn-slurm
CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-6817}
SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-6818}
PARTITION=local

die() { echo "slurm-local: $*" >&2; exit 1; }
say() { echo "slurm-local: $*"; }
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1" 2>/dev/null)" 2>/dev/null; }

need_root() { [[ $(id -u) -eq 0 ]] || die "run as root (it writes $CONF and starts system daemons)"; }

need_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sbatch sinfo; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    ((${#missing[@]} == 0)) || die "missing ${missing[*]}: apt-get install -y slurm-wlm munge"
}

write_conf() {
    local host node
    host=$(hostname -s)
    # The node line from slurmd itself: CPUs, sockets, cores, threads and RealMemory (MB) of this host.
    node=$(slurmd -C | head -n1 | sed -e "s/^NodeName=[^ ]*/NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host/")
    [[ $node == NodeName=*CPUs=*RealMemory=* ]] || die "unexpected \`slurmd -C\` output: $node"
    local new
    new=$(cat <<EOF
$MARK (do not edit; \`scripts/slurm-local.sh down\` stops it)
ClusterName=modeconn-local
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
AuthType=auth/munge
CredType=cred/munge
SlurmUser=slurm
SlurmdUser=root
StateSaveLocation=$STATE/slurmctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
# squeue remembers finished jobs this long (the Snakemake plugin reads their state with it)
MinJobAge=600
# seconds between SIGTERM and SIGKILL when a job is cancelled or runs out of time
KillWait=10
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
$node State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
    mkdir -p "$CONF_DIR"
    if [[ -f $CONF ]] && ! head -n1 "$CONF" | grep -qF "$MARK"; then
        [[ ${SLURM_LOCAL_FORCE:-0} == 1 ]] || die "$CONF exists and was not written by this script; SLURM_LOCAL_FORCE=1 replaces it (kept as $CONF.bak)"
        cp "$CONF" "$CONF.bak"
    fi
    if [[ -f $CONF && $(cat "$CONF") == "$new" ]]; then
        return 1  # unchanged
    fi
    printf '%s\n' "$new" > "$CONF.tmp" && mv "$CONF.tmp" "$CONF"
    say "wrote $CONF ($(grep -o 'CPUs=[0-9]*' <<<"$node"), $(grep -o 'RealMemory=[0-9]*' <<<"$node") MB)"
    return 0
}

start_munge() {
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then
        return
    fi
    [[ -s /etc/munge/munge.key ]] || { mungekey --create 2>/dev/null || /usr/sbin/create-munge-key; }
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge/munge.key
    chmod 0755 /run/munge
    runuser -u munge -- munged
    for _ in $(seq 50); do
        munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1 && { say "munged started"; return; }
        sleep 0.1
    done
    die "munged did not start (see /var/log/munge/munged.log)"
}

wait_ready() {
    local state=""
    for _ in $(seq 120); do
        state=$(sinfo -h -n "$(hostname -s)" -o %T 2>/dev/null | head -n1 || true)
        case $state in
            idle* | mixed* | allocated* | completing*) say "node $(hostname -s) is $state (partition $PARTITION)"; return 0 ;;
            drain* | down*)
                # A node that came back with a changed config, or after `down`: return it to service.
                scontrol update NodeName="$(hostname -s)" State=RESUME >/dev/null 2>&1 || true ;;
        esac
        sleep 0.5
    done
    die "the node did not become usable (state: ${state:-none}); see $LOGS/slurmctld.log and $LOGS/slurmd.log"
}

up() {
    need_root
    need_packages
    mkdir -p "$RUN" "$LOGS" "$STATE/slurmctld" "$STATE/slurmd"
    chown slurm:slurm "$STATE/slurmctld" "$LOGS"
    local changed=0
    write_conf && changed=1
    start_munge
    if alive "$RUN/slurmctld.pid" && ((changed)); then
        stop_pid slurmctld "$RUN/slurmctld.pid"  # a new node description or port needs a restart
    fi
    if ! alive "$RUN/slurmctld.pid"; then
        slurmctld
        say "slurmctld started"
    fi
    for _ in $(seq 60); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.5; done
    scontrol ping | grep -q UP || die "slurmctld is not answering (see $LOGS/slurmctld.log)"
    if alive "$RUN/slurmd.pid" && ((changed)); then
        kill "$(cat "$RUN/slurmd.pid")"
        for _ in $(seq 50); do alive "$RUN/slurmd.pid" || break; sleep 0.1; done
    fi
    if ! alive "$RUN/slurmd.pid"; then
        slurmd
        say "slurmd started"
    fi
    wait_ready
}

stop_pid() {  # name pidfile
    if alive "$2"; then
        kill "$(cat "$2")"
        for _ in $(seq 100); do alive "$2" || { say "$1 stopped"; return; }; sleep 0.1; done
        kill -9 "$(cat "$2")" 2>/dev/null || true
        say "$1 killed"
    fi
}

down() {
    need_root
    stop_pid slurmd "$RUN/slurmd.pid"
    stop_pid slurmctld "$RUN/slurmctld.pid"
    # munged writes its own pid file; stop it only where this script started it (munge is ours
    # only when slurm.conf is ours).
    if [[ -f $CONF ]] && head -n1 "$CONF" | grep -qF "$MARK"; then
        stop_pid munged /run/munge/munged.pid
    fi
}

status() {
    local ok=0
    for d in slurmctld slurmd; do
        if alive "$RUN/$d.pid"; then echo "$d: running (pid $(cat "$RUN/$d.pid"))"; else echo "$d: stopped"; ok=1; fi
    done
    if command -v sinfo >/dev/null && scontrol ping 2>/dev/null | grep -q UP; then
        sinfo -N -o "%N %P %T %c %m" 2>/dev/null || true
        squeue 2>/dev/null || true
        sinfo -h -o %T | grep -qE '^(idle|mixed|allocated|completing)' || ok=1
    else
        echo "slurmctld: not answering"
        ok=1
    fi
    return $ok
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
