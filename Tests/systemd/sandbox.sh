#!/bin/bash
# Tests/systemd/sandbox.sh: runs a command inside a private, throwaway systemd,
# for the systemd test (Tests/systemd/service-test.sh). The project's own tool:
# nothing beside the checkout is needed.
#
#   Tests/systemd/sandbox.sh [--bind DIR]... [--timeout SECONDS] -- COMMAND [ARG...]
#
# How it isolates the machine (needs root and util-linux's unshare and nsenter):
# - new mount, PID, UTS, IPC, network (loopback only) and cgroup namespaces;
# - the root filesystem is the host's seen through an overlay whose writable
#   layer is a tmpfs: `make install`, useradd, units, /var/lib and /var/spool
#   land there and vanish with the sandbox; /etc/fstab inside is empty;
# - /tmp, /run and /dev/shm are fresh tmpfs (systemd cleans /tmp at boot: it
#   must never see the host's), /proc is the sandbox's own, /sys is read-only
#   except the cgroup tree (so udev and the like stay off the host's devices);
# - systemd is told it runs in a container and boots sandbox.target (basic
#   system only, no getty, no network, no timers, none of the host's enabled
#   services); units that change the host kernel or clock are masked;
# - the current directory and every --bind DIR are bound read-write at the same
#   path: the only host paths the command can change.
# COMMAND runs as root in the current directory once systemd is up; its exit
# status is this script's (124 after --timeout, default 600 s). Then systemd
# powers off and everything is released.
set -euo pipefail

self=$(realpath "$0")

# ---- stage 2: PID 1 of the new namespaces; prepares the root, then becomes systemd ----
if [ "${1:-}" = --stage2 ]; then
  state=$2 binds=$3
  # The host's PID of this process (this /proc is still the host's): the outer stage enters by it.
  read -r host_pid _ < /proc/self/stat
  mount --make-rprivate /
  layer=$state/layer
  mount -t tmpfs -o mode=0700,size=8g diffusiond-sandbox "$layer"
  mkdir -p "$layer/upper" "$layer/work" "$layer/root"
  new=$layer/root
  mount -t overlay diffusiond-sandbox -o "lowerdir=/,upperdir=$layer/upper,workdir=$layer/work" "$new"
  mount -t proc proc "$new/proc"
  mount --rbind /dev "$new/dev"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$new/dev/shm"
  mount --rbind /sys "$new/sys"
  mount -o remount,bind,ro "$new/sys"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$new/tmp"
  mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$new/run"
  IFS=: read -r -a dirs <<< "$binds"
  for d in "${dirs[@]}"; do
    [ -n "$d" ] || continue
    mkdir -p "$new$d"
    mount --bind "$d" "$new$d"
  done
  : > "$new/etc/fstab"
  echo diffusiond-sandbox > "$new/etc/hostname"
  hostname diffusiond-sandbox
  units=$new/etc/systemd/system
  mkdir -p "$units"
  cat > "$units/sandbox.target" <<'UNIT'
[Unit]
Description=diffusiond test sandbox
Requires=basic.target
After=basic.target
AllowIsolate=yes
UNIT
  for u in systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket \
           systemd-udev-trigger.service systemd-udev-settle.service systemd-sysctl.service \
           systemd-modules-load.service systemd-binfmt.service proc-sys-fs-binfmt_misc.automount \
           systemd-timesyncd.service systemd-hwdb-update.service systemd-remount-fs.service \
           systemd-firstboot.service systemd-pstore.service systemd-journal-flush.service \
           getty.target console-getty.service serial-getty@ttyS0.service; do
    ln -sfn /dev/null "$units/$u"
  done
  # Never start systemd on anything but the prepared root, with its own /tmp.
  [ "$(stat -f -c %T "$new/tmp")" = tmpfs ] || { echo "sandbox: /tmp is not a private tmpfs" >&2; exit 1; }
  [ "$(stat -f -c %T "$new")" = overlayfs ] || { echo "sandbox: the root is not the overlay" >&2; exit 1; }
  mkdir -p "$new/.host"
  cd "$new"
  pivot_root . .host
  umount -l /.host
  rmdir /.host 2>/dev/null || true
  echo "$host_pid" > "/run/sandbox-host-pid"
  export container=diffusiond-sandbox
  exec /lib/systemd/systemd --system --unit=sandbox.target </dev/null >/dev/null 2>&1
fi

# ---- stage 1: on the host ----
binds=("$PWD")
timeout_s=600
while [ $# -gt 0 ]; do
  case "$1" in
    --bind) binds+=("$(realpath "$2")"); shift 2 ;;
    --timeout) timeout_s=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,24p' "$self"; exit 0 ;;
    *) echo "sandbox: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ $# -gt 0 ] || { echo "sandbox: no command (see --help)" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "sandbox: needs root" >&2; exit 2; }
[ -x /lib/systemd/systemd ] || { echo "sandbox: no /lib/systemd/systemd" >&2; exit 2; }
command -v unshare >/dev/null && command -v nsenter >/dev/null || { echo "sandbox: needs unshare and nsenter" >&2; exit 2; }

state=$(mktemp -d /var/tmp/diffusiond-sandbox.XXXXXX)
mkdir "$state/layer"
bind_list=$(IFS=:; echo "${binds[*]}")
unshare --mount --pid --fork --uts --ipc --net --cgroup --propagation private -- \
  "$self" --stage2 "$state" "$bind_list" &
unshare_pid=$!
pid1=

stop_sandbox() {
  [ -n "$pid1" ] || { pid1=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true); pid1=${pid1%% *}; }
  if [ -n "$pid1" ] && [ -d "/proc/$pid1" ]; then
    nsenter -t "$pid1" -m -p -- systemctl poweroff --no-block >/dev/null 2>&1 || true
    for _ in $(seq 1 60); do [ -d "/proc/$pid1" ] || break; sleep 0.25; done
    # Killing PID 1 of a PID namespace ends every process in it; the mounts go with the namespace.
    [ -d "/proc/$pid1" ] && kill -KILL "$pid1" 2>/dev/null || true
  fi
  kill -KILL "$unshare_pid" 2>/dev/null || true
  wait "$unshare_pid" 2>/dev/null || true
  rmdir "$state/layer" "$state" 2>/dev/null || true
}
trap stop_sandbox EXIT
trap 'exit 130' INT TERM

# systemd writes nothing we can read from here before it is up: find PID 1 as unshare's child.
for _ in $(seq 1 200); do
  pid1=$(cat "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null || true)
  pid1=${pid1%% *}
  [ -n "$pid1" ] && [ "$(cat "/proc/$pid1/comm" 2>/dev/null)" = systemd ] && break
  kill -0 "$unshare_pid" 2>/dev/null || { echo "sandbox: the namespaces could not be prepared" >&2; exit 1; }
  sleep 0.1
done
[ "$(cat "/proc/$pid1/comm" 2>/dev/null)" = systemd ] || { echo "sandbox: systemd did not start" >&2; exit 1; }
enter() { nsenter -t "$pid1" -m -p -u -i -n -C -- "$@"; }
[ "$(enter cat /run/sandbox-host-pid 2>/dev/null)" = "$pid1" ] || { echo "sandbox: PID 1 is not the sandbox's" >&2; exit 1; }
for _ in $(seq 1 300); do
  enter test -S /run/systemd/private && break
  sleep 0.1
done
booted=$(enter timeout 90 systemctl is-system-running --wait 2>/dev/null || true)
case "$booted" in
  running|degraded) ;;
  *) echo "sandbox: systemd did not finish booting (${booted:-no answer})" >&2
     enter systemctl --failed --no-pager >&2 || true
     exit 1 ;;
esac

set +e
enter timeout "$timeout_s" bash -c 'cd "$1" && shift && exec "$@"' sandbox "$PWD" "$@"
rc=$?
set -e
exit "$rc"
