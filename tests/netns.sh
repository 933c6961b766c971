# tests/netns.sh - hosts in network namespaces, for the tests that need more
# than one machine (sourced after tests/lib.sh, never run).
# shellcheck shell=bash
#
#   . "$ROOT/tests/lib.sh"; . "$ROOT/tests/netns.sh"
#   scratch NAME
#   why=$(netns_can_run) || { skip "NAME: $why"; summary; exit; }
#   netns_init                     # the trap; stale namespaces of dead runs removed
#   netns_host_add ex; netns_host_add c1
#   netns_link ex c1               # a veth pair, its own /30
#   netns_sshd ex                  # an sshd in ex, its own host key and config
#   netns_client_key c1 ex; netns_authorize ex c1
#   netns_exec c1 ssh $(netns_ssh_opts c1) root@"$(netns_addr ex c1)" true
#
# A host is a network namespace that shares the filesystem: its files (keys,
# sshd config, data, state) live in its own directory, $(netns_dir NAME),
# under $W/hosts. Namespaces are named $NETNS_TAG-NAME, NETNS_TAG being
# "phns" and this shell's pid, so that parallel runs do not collide, and a
# crashed run's namespaces (whose pid is gone) are removed by the next.
# Addresses are private (10.213.LINK.1 and .2, one /30 per link) and exist
# only inside the namespaces; a host forwards nothing (net.ipv4.ip_forward=0
# in each), so two hosts talk only over a link between them.

NETNS_PREFIX=phns
NETNS_TAG=$NETNS_PREFIX$$
NETNS_PORT=${NETNS_PORT:-22}
NETNS_SSHD=${NETNS_SSHD:-$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)}
netns_hosts=() netns_links=0
declare -A netns_addrs=() # "A B": A's address on its link to B

# netns_can_run: exit 0 if namespaces, veths and an sshd can be made here;
# else prints one line saying why not, and returns 1.
netns_can_run() {
    local t probe=${NETNS_PREFIX}probe$$ shadow
    [ "$(id -u)" -eq 0 ] || { echo "network namespaces need root (this is uid $(id -u))"; return 1; }
    for t in ip ping ssh ssh-keygen rsync; do
        command -v "$t" >/dev/null || { echo "$t is not installed (apt-get install iproute2 iputils-ping openssh-client rsync)"; return 1; }
    done
    [ -x "$NETNS_SSHD" ] || { echo "sshd is not installed (apt-get install openssh-server)"; return 1; }
    # sshd without PAM refuses a locked account ('!' in /etc/shadow), even with a key
    shadow=$(getent shadow root 2>/dev/null | cut -d: -f2)
    [ "${shadow#!}" = "$shadow" ] || { echo "root's account is locked ('!' in /etc/shadow): sshd refuses its keys"; return 1; }
    if ! t=$(ip netns add "$probe" 2>&1); then
        echo "ip netns add fails: ${t//$'\n'/ }"
        return 1
    fi
    if ! t=$(ip netns exec "$probe" ip link add "${probe}a" type veth peer name "${probe}b" 2>&1); then
        ip netns del "$probe" 2>/dev/null
        echo "cannot make a veth pair in a namespace: ${t//$'\n'/ }"
        return 1
    fi
    ip netns del "$probe"
}

# netns_init: installs netns_cleanup (and the removal of $W) as the trap on
# exit, INT and TERM, and removes the namespaces of dead runs. Call after
# scratch.
netns_init() {
    trap 'netns_cleanup; rm -rf "$W"' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    netns_reap_stale
    mkdir -p "$W/hosts"
}

# netns_reap_stale: deletes namespaces named $NETNS_PREFIX<pid>-* whose pid
# is no longer running (a run that crashed or was killed with -9), after
# ending the processes still in them.
netns_reap_stale() {
    local ns pid
    for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }'); do
        [[ "$ns" =~ ^$NETNS_PREFIX([0-9]+)- ]] || continue
        pid=${BASH_REMATCH[1]}
        [ "$pid" = $$ ] && continue
        netns_alive "$pid" && continue
        netns_del "$ns"
    done
}

# netns_alive PID: PID is a running process (a zombie, killed but not yet
# reaped by its parent, is not).
netns_alive() {
    kill -0 "$1" 2>/dev/null || return 1
    ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}

# netns_del NS: ends every process in namespace NS (by its pid), then deletes
# it (with it its veths, whose peers go too).
netns_del() {
    local ns=$1 pids i
    ip netns list 2>/dev/null | awk '{ print $1 }' | grep -qxF -- "$ns" || return 0
    pids=$(ip netns pids "$ns" 2>/dev/null)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill $pids 2>/dev/null
        for ((i = 0; i < 20; i++)); do
            [ -z "$(ip netns pids "$ns" 2>/dev/null)" ] && break
            sleep 0.1
        done
        pids=$(ip netns pids "$ns" 2>/dev/null)
        # shellcheck disable=SC2086
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null
    fi
    ip netns del "$ns" 2>/dev/null
}

# netns_cleanup: ends the sshds and every other process left in this run's
# namespaces, and deletes them; safe to run twice.
netns_cleanup() {
    local h pidfile
    [ -n "${NETNS_WATCHDOG:-}" ] && kill "$NETNS_WATCHDOG" 2>/dev/null
    NETNS_WATCHDOG=
    for h in "${netns_hosts[@]}"; do
        pidfile=$W/hosts/$h/sshd/sshd.pid
        [ -s "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null
        rm -f "$pidfile"
    done
    for h in "${netns_hosts[@]}"; do netns_del "$NETNS_TAG-$h"; done
    netns_hosts=()
}

# netns_dir NAME: the host's own directory.
netns_dir() { echo "$W/hosts/$1"; }

# netns_exec NAME CMD...: runs CMD in the host's namespace.
netns_exec() {
    local h=$1
    shift
    ip netns exec "$NETNS_TAG-$h" "$@"
}

# netns_host_add NAME [ADDR/PREFIX...]: a host: its namespace (loopback up,
# no forwarding), its directory, and ADDRs (if any) on its loopback.
netns_host_add() {
    local h=$1 a
    shift
    ip netns add "$NETNS_TAG-$h" || return 1
    netns_hosts+=("$h")
    mkdir -p "$W/hosts/$h"
    netns_exec "$h" ip link set lo up || return 1
    netns_exec "$h" sysctl -qw net.ipv4.ip_forward=0 || return 1
    for a in "$@"; do netns_exec "$h" ip addr add "$a" dev lo || return 1; done
}

# netns_link A B: a veth pair between hosts A and B, on its own /30:
# 10.213.N.1 in A and 10.213.N.2 in B for the Nth link (netns_addr A B,
# netns_addr B A).
netns_link() {
    local a=$1 b=$2 n=$((netns_links + 1)) va vb
    va=v$n-$b vb=v$n-$a # in A, the link to B; in B, the link to A
    ip link add "${va:0:15}" netns "$NETNS_TAG-$a" type veth peer name "${vb:0:15}" netns "$NETNS_TAG-$b" || return 1
    netns_links=$n
    netns_exec "$a" ip addr add "10.213.$n.1/30" dev "${va:0:15}" &&
        netns_exec "$b" ip addr add "10.213.$n.2/30" dev "${vb:0:15}" &&
        netns_exec "$a" ip link set "${va:0:15}" up &&
        netns_exec "$b" ip link set "${vb:0:15}" up || return 1
    netns_addrs["$a $b"]=10.213.$n.1 netns_addrs["$b $a"]=10.213.$n.2
}

# netns_addr A B: A's address on its link to B.
netns_addr() { echo "${netns_addrs["$1 $2"]}"; }

# netns_dev A B: the name, in A, of A's end of its link to B.
netns_dev() {
    local n=${netns_addrs["$1 $2"]#10.213.} d
    d=v${n%.*}-$2
    echo "${d:0:15}"
}

# netns_addrs_of NAME: every address of the host, one a line.
netns_addrs_of() {
    local k
    for k in "${!netns_addrs[@]}"; do [ "${k%% *}" = "$1" ] && echo "${netns_addrs[$k]}"; done
}

# netns_sshd NAME: an sshd in the host's namespace on each of its addresses
# (port $NETNS_PORT), with its own host key, config, pid file, log and
# authorized_keys (empty: see netns_authorize), all in $(netns_dir NAME)/sshd.
# Root logs in with a key only; no PAM, no DNS. Waits until it listens.
netns_sshd() {
    local h=$1 d a i addrs
    d=$W/hosts/$h/sshd
    mkdir -p "$d" /run/sshd # /run/sshd: sshd's privilege-separation directory
    addrs=$(netns_addrs_of "$h")
    [ -n "$addrs" ] || { echo "netns_sshd $h: the host has no link (netns_link first)" >&2; return 1; }
    ssh-keygen -q -t ed25519 -N '' -C "host-$h" -f "$d/host_key" </dev/null || return 1
    : >"$d/authorized_keys"
    chmod 600 "$d/authorized_keys"
    {
        for a in $addrs; do echo "ListenAddress $a:$NETNS_PORT"; done
        cat <<CFG
HostKey $d/host_key
PidFile $d/sshd.pid
AuthorizedKeysFile $d/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
PermitUserEnvironment no
X11Forwarding no
AllowTcpForwarding no
MaxStartups 30:30:60
LogLevel VERBOSE
CFG
    } >"$d/sshd_config"
    "$NETNS_SSHD" -t -f "$d/sshd_config" || return 1
    netns_exec "$h" "$NETNS_SSHD" -f "$d/sshd_config" -E "$d/sshd.log" || return 1
    a=$(echo "$addrs" | head -1)
    for ((i = 0; i < 50; i++)); do
        netns_exec "$h" bash -c "exec 3<>/dev/tcp/$a/$NETNS_PORT" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "netns_sshd $h: sshd does not listen on $a:$NETNS_PORT" >&2
    cat "$d/sshd.log" >&2
    return 1
}

# netns_client_key NAME SERVER: the host's own ssh key ($(netns_dir
# NAME)/ssh/id_ed25519, made once) and a known_hosts holding SERVER's host
# key at each of its addresses, so that StrictHostKeyChecking=yes holds.
netns_client_key() {
    local h=$1 s=$2 d a key
    d=$W/hosts/$h/ssh
    mkdir -p "$d"
    [ -f "$d/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C "$h" -f "$d/id_ed25519" </dev/null || return 1
    key=$(cut -d' ' -f1,2 "$W/hosts/$s/sshd/host_key.pub") || return 1
    touch "$d/known_hosts"
    for a in $(netns_addrs_of "$s"); do
        if [ "$NETNS_PORT" = 22 ]; then echo "$a $key"; else echo "[$a]:$NETNS_PORT $key"; fi
    done >>"$d/known_hosts"
}

# netns_authorize SERVER NAME: SERVER's sshd lets NAME's key log in as root.
netns_authorize() { cat "$W/hosts/$2/ssh/id_ed25519.pub" >>"$W/hosts/$1/sshd/authorized_keys"; }

# netns_ssh_opts NAME: the ssh options of the host's own identity: its key
# only, its known_hosts only and strictly, no user config, no prompts.
netns_ssh_opts() {
    local d=$W/hosts/$1/ssh
    echo "-F /dev/null -p $NETNS_PORT -i $d/id_ed25519 -o IdentitiesOnly=yes -o UserKnownHostsFile=$d/known_hosts" \
        "-o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes -o ConnectTimeout=5"
}

# netns_ssh_cmd NAME: the remote shell for rsync -e / --ssh: ssh with the
# host's options.
netns_ssh_cmd() { echo "ssh $(netns_ssh_opts "$1")"; }
