#!/bin/sh
# /init of the `cargo xtask vm-test` initramfs (copied in by xtask/src/vm.rs; runs as PID 1 under
# busybox sh inside a qemu VM with one of the matrix kernels).
#
# Everything it reports goes to the serial console between markers that the host parses:
#   ===VMTEST-BEGIN <name>===
#   ...output...
#   ===VMTEST-END <name> rc=<exit code> t=<uptime in seconds>===
# and ===VMTEST-DONE=== last. Every wait is bounded; whatever happens, it ends with poweroff -f
# (the host also kills qemu after its own timeout).
#
# Test traffic stays inside the VM: loopback, and a veth pair whose peer lives in a network
# namespace created here (the VM has no network device at all).

export PATH=/bin
umask 022

mount -t devtmpfs dev /dev 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tmpfs tmp /tmp
# Keep kernel messages off the console while sections are printed; they are dumped at the end.
dmesg -n 1

begin() { echo "===VMTEST-BEGIN $1==="; }
# the END marker carries the VM's uptime, so the host can tell where the time goes
end() { echo "===VMTEST-END $1 rc=$2 t=$(cut -d' ' -f1 /proc/uptime)==="; }
# section NAME CMD...: run CMD with its stdout and stderr inside the markers
section() {
    name=$1; shift
    begin "$name"
    "$@" 2>&1
    end "$name" $?
}

load_modules() {
    rc=0
    # /modules/order: one file name per line, dependencies first (computed on the host)
    while read -r m; do
        [ -n "$m" ] || continue
        out=$(insmod "/modules/$m" 2>&1) || {
            case "$out" in
                *exists*) ;;
                *) echo "insmod $m: $out"; rc=1 ;;
            esac
        }
    done < /modules/order
    lsmod | sed 1d | awk '{print $1}' | sort | tr '\n' ' '; echo
    return $rc
}

lab_up() {
    ip link set lo up || return 1
    # busybox ip: `add name X type veth` makes X and its peer veth0
    ip link add name vt0 type veth || return 1
    # the peer namespace lives as long as this sleeper (bounded)
    unshare -n sleep 600 &
    PEER=$!
    sleep 0.2
    ip link set veth0 netns $PEER || return 1
    ip addr add 10.99.0.1/24 dev vt0 || return 1
    ip link set vt0 up || return 1
    nsenter -t $PEER -n ip link set lo up || return 1
    nsenter -t $PEER -n ip addr add 10.99.0.2/24 dev veth0 || return 1
    nsenter -t $PEER -n ip link set veth0 up || return 1
    ip addr; nsenter -t $PEER -n ip addr
    # let the veth carrier come up and answer one ping (ARP)
    ping -c 1 -W 3 10.99.0.2
}

# UDP to closed ports: busybox tftp is the only busybox UDP client that takes a port.
# One datagram per retry; `timeout` bounds it. Expected drop: NO_SOCKET in __udp4_lib_rcv.
traffic() {
    timeout 1 tftp -g -r x -l /tmp/tftp.out 127.0.0.1 9999 >/dev/null 2>&1
    timeout 1 tftp -g -r x -l /tmp/tftp.out 10.99.0.2 9998 >/dev/null 2>&1
    return 0
}

# drops HOOK: run `tracer drops` with that hook while traffic() runs, then stop it with SIGTERM
drops() {
    hook=$1
    out=/tmp/drops-$hook.json
    err=/tmp/drops-$hook.err
    /tracer drops -o json --all-reasons --proto udp --hook "$hook" --duration 60s >"$out" 2>"$err" &
    pid=$!
    # loading under TCG can take seconds: wait (bounded) for "attached" or for the tracer to die
    i=0
    while [ $i -lt 300 ]; do
        grep -q attached "$err" && break
        kill -0 $pid 2>/dev/null || break
        sleep 0.1; i=$((i + 1))
    done
    traffic
    sleep 1
    kill -TERM $pid 2>/dev/null
    i=0
    while kill -0 $pid 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    kill -KILL $pid 2>/dev/null
    wait $pid
    rc=$?
    begin "drops-$hook"; cat "$out"; end "drops-$hook" $rc
    begin "drops-$hook-stderr"; cat "$err"; end "drops-$hook-stderr" 0
}

section uname uname -r
section modules load_modules
# ipip, ip_gre and sit add a fallback device (tunl0, gre0, sit0) to every new network namespace
# unless told not to; on a node only pods of a Calico-like CNI have them. The labs' namespaces
# stand for nodes and pods without them (the host kernel has no such modules).
echo 2 > /proc/sys/net/core/fb_tunnels_only_for_init_net
section btf sh -c 'ls /sys/kernel/btf | tr "\n" " "; echo'
section check /tracer check -o json
section check-table /tracer check
section lab lab_up
drops tp_btf
drops tracepoint
# integration-test binaries (cargo xtask vm-test --with-tests): each is one section
if [ -d /tests ]; then
    # TCG emulation: the tests that time traffic against a --duration scale it by this.
    export TRACER_BIN=/tracer TRACER_REQUIRE_PRIVILEGED=1 TRACER_NO_CONTAINER_RUNTIME=1 PYTHONHOME=/usr RUST_BACKTRACE=1 TRACER_TEST_SLOWDOWN=3
    for t in /tests/*; do
        # --nocapture: what the tests print about this kernel (where it frees nftables drops,
        # which hooks check found) stays in console.log for the record
        section "test-${t##*/}" "$t" --test-threads=1 --nocapture
    done
fi
section dmesg sh -c 'dmesg | grep -iE "bpf|btf|verif|error|fail|warn" | tail -50'
echo "===VMTEST-DONE==="
sync
poweroff -f
