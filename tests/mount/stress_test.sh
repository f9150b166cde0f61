#!/usr/bin/env bash
# Bounded stress-ng run of filesystem stressors on a fresh mem-fuse mount.
#
# usage: stress_test.sh PATH/TO/mem-fuse
# Exit: 0 pass, 1 fail, 77 skip (no usable /dev/fuse; under CI=true that is a
# failure instead, because the CI must exercise a real mount).
# Env: STRESS_TIMEOUT (default 20s) for the stress-ng run.
set -euo pipefail

bin=${1:?usage: stress_test.sh PATH/TO/mem-fuse}
timeout=${STRESS_TIMEOUT:-20s}

skip_or_fail() {
  if [[ ${CI:-} == true ]]; then
    echo "FAIL: CI=true but $1" >&2
    exit 1
  fi
  echo "SKIP: $1" >&2
  exit 77
}

# -c first: `<>` would create a regular file where the device is missing.
if ! [[ -c /dev/fuse ]] || ! { exec 3<>/dev/fuse; } 2>/dev/null; then
  skip_or_fail "/dev/fuse cannot be opened"
fi
exec 3>&-
command -v stress-ng >/dev/null || skip_or_fail "stress-ng is not installed"
[[ -x $bin ]] || { echo "FAIL: $bin is not an executable" >&2; exit 1; }

work=$(mktemp -d /tmp/memfuse-stress-XXXXXX)
chmod 0755 "$work"
mnt=$work/mnt
log=$work/daemon.log
mkdir "$mnt"
pid=

is_mounted() { grep -q " $mnt " /proc/self/mountinfo; }

# Polls `$@` every 10 ms for at most $1 seconds; the only way this script waits.
wait_for() {
  local seconds=$1
  shift
  local i
  for ((i = 0; i < seconds * 100; i++)); do
    "$@" && return 0
    sleep 0.01
  done
  "$@"
}

daemon_gone() { ! kill -0 "$pid" 2>/dev/null; }

# Always runs: unmount by the path we mounted, end only the PID we started,
# remove the temp dir (never while something is mounted on it).
cleanup() {
  local status=$?
  trap - EXIT
  if is_mounted; then
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  if [[ -n $pid ]] && ! daemon_gone; then
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for 10 daemon_gone; then
      echo "mem-fuse (pid $pid) ignored SIGTERM; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  if ((status != 0)) && [[ -s $log ]]; then
    echo "--- mem-fuse output (last 50 lines) ---" >&2
    tail -n 50 "$log" >&2
  fi
  if is_mounted; then
    echo "warning: $mnt still mounted; leaving $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

"$bin" "$mnt" >"$log" 2>&1 &
pid=$!

# The mount is ready once the mount point is a FUSE file system
# (FUSE_SUPER_MAGIC); fail early, with its output, if the daemon dies.
fuse_ready() {
  daemon_gone && return 0
  is_mounted && [[ $(timeout 5 stat -f -c %t "$mnt") == 65735546 ]]
}
if ! wait_for 10 fuse_ready || daemon_gone; then
  echo "FAIL: mem-fuse did not mount $mnt within 10 s" >&2
  exit 1
fi

# Filesystem stressors that need nothing FUSE lacks, sized to fit the default
# 512 MB cache; --verify makes the data stressors check what they read back.
# Only stressors that stay under --temp-path: --getdent walks all of /tmp,
# /proc, /sys, /run and /dev, so it holds directories open in the mounts of
# tests running beside this one and makes their unmount fail with EBUSY.
# readdir is exercised here by --dir, --dentry and --dirdeep instead.
stressors=(
  --dir 1 --dir-dirs 512
  --dentry 1 --dentries 1024
  --filename 1
  --hdd 1 --hdd-bytes 32M --hdd-write-size 64K
  --link 1
  --symlink 1
  --rename 1
  --chmod 1
  --fallocate 1 --fallocate-bytes 16M
  --seek 1 --seek-size 16M
  --xattr 1
  --dirdeep 1 --dirdeep-dirs 1 --dirdeep-inodes 2000
  --fstat 1
  --utime 1
)
out=$work/stress-ng.log
echo "stress-ng on $mnt for $timeout" >&2
set +e
stress-ng --temp-path "$mnt" --timeout "$timeout" --metrics-brief --verify \
  "${stressors[@]}" >"$out" 2>&1
rc=$?
set -e
cat "$out"

failed=0
if ((rc != 0)); then
  echo "FAIL: stress-ng exited with $rc" >&2
  failed=1
fi
if grep -Eq "(fail|error)[:]|FAIL" "$out"; then
  echo "FAIL: stress-ng reported errors:" >&2
  grep -E "(fail|error)[:]|FAIL" "$out" >&2
  failed=1
fi
if daemon_gone; then
  echo "FAIL: mem-fuse died during the run" >&2
  exit 1
fi
# stress-ng removes its temp directories; leftovers mean a delete failed.
leftovers=$(ls -A "$mnt")
if [[ -n $leftovers ]]; then
  echo "FAIL: entries left on the mount after stress-ng: $leftovers" >&2
  failed=1
fi
((failed == 0)) || exit 1

# A clean unmount ends the daemon with exit code 0.
fusermount3 -u "$mnt"
if ! wait_for 10 daemon_gone; then
  echo "FAIL: mem-fuse still running 10 s after fusermount3 -u" >&2
  exit 1
fi
set +e
wait "$pid"
daemon_rc=$?
set -e
pid=
if ((daemon_rc != 0)); then
  echo "FAIL: mem-fuse exited with $daemon_rc after unmount" >&2
  exit 1
fi
echo "PASS" >&2
