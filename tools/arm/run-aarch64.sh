#!/usr/bin/env bash
# Run edgeseq on an emulated aarch64 (arm64) Debian root under qemu-user, and print PASS/FAIL.
#
#   sudo tools/arm/run-aarch64.sh            # from the root of an edgeseq checkout
#
# What it does (each step is skipped when already done, so a second run reuses the root):
#   1. host: apt-get install qemu-user-static binfmt-support debootstrap; mount binfmt_misc;
#      enable the qemu-aarch64 binfmt handler.
#   2. host: debootstrap --foreign an arm64 bookworm root from the mirror apt already uses.
#   3. in a private mount namespace (mounts vanish with it, so the host's /proc and /dev are
#      never left bound, even after kill -9): second stage, mount proc/sys/dev, bind an ARM
#      /proc/cpuinfo (onnxruntime aborts on import when it sees the x86 host's), install
#      python3.11 + venv, pip install edgeseq[onnx] from this checkout (binary wheels only),
#      then (x86 reference outputs from the same snapshot on the host in between) run:
#      import check, the kernel-test subset, the end-to-end check against x86, and
#      the x86-made artifacts in a second venv holding only the bare `pip install edgeseq`;
#      `aot`: `edgeseq compile --target cortex-a72|cortex-a76` on the host, the compiled
#      artifacts run in a third venv holding the board runtime (no numba, no llvmlite), and
#      code for cortex-a76 is refused under QEMU_CPU=cortex-a72.
#
# Environment (all optional):
#   EDGESEQ_ARM_ROOT      arm64 root to create/reuse            (/var/tmp/edgeseq-arm64)
#   EDGESEQ_ARM_MIRROR    Debian mirror for the root            (apt's own Debian mirror)
#   EDGESEQ_ARM_CPU       CPU qemu emulates and cpuinfo names   (cortex-a72: Raspberry Pi 4)
#   EDGESEQ_ARM_PYTEST    pytest arguments for the kernel part  (tools/arm/kernel-tests.txt)
#   EDGESEQ_ARM_PARTS     which parts to run                    ("import kernels e2e board")
#                         (known: import kernels e2e board aot)
#   EDGESEQ_HOST_PYTHON   x86 interpreter that makes the x86 reference venv ROOT.x86-venv
#                         (default: the checkout's .venv/bin/python, else python3); that venv
#                         gets the root's numpy/numba/onnxruntime versions and the same source
set -euo pipefail

SELF="$(readlink -f "${BASH_SOURCE[0]}")"
HERE="$(dirname "$SELF")"
REPO="$(cd "$HERE/../.." && pwd)"
ROOT="${EDGESEQ_ARM_ROOT:-/var/tmp/edgeseq-arm64}"
ARM_CPU="${EDGESEQ_ARM_CPU:-cortex-a72}"
PARTS="${EDGESEQ_ARM_PARTS:-import kernels e2e board}"
SUITE=bookworm
VENV=/opt/edgeseq-venv            # inside the root
BOARD_VENV=/opt/edgeseq-board     # inside the root: only edgeseq's core dependencies
AOT_VENV=/opt/edgeseq-aot-board   # inside the root: the board runtime (core deps minus numba)
AOT_TARGETS="cortex-a72 cortex-a76"   # the host compiles for these; the first must lack
                                      # features of the others (it is the refusing CPU)
SRC=/opt/edgeseq-src              # inside the root: copy of the checkout
WORK=/opt/edgeseq-work            # inside the root: x86 reference outputs, logs
SILERO_VERSION=6.2.3
NICE=(nice -n 10)                 # the host is shared; heavy steps run niced

log() { printf '[arm64 %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 2; }

# ---------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------
host_packages() {
    local need=()
    for p in qemu-user-static binfmt-support debootstrap debian-archive-keyring; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
    done
    [ "$(uname -m)" = aarch64 ] && return 0   # native arm64 host: nothing to emulate
    if [ ${#need[@]} -gt 0 ]; then
        log "apt-get install ${need[*]}"
        "${NICE[@]}" apt-get update -qq
        DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -qq "${need[@]}" >/dev/null
    fi
}

enable_binfmt() {
    [ "$(uname -m)" = aarch64 ] && return 0
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        log "mounting binfmt_misc"
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        log "enabling the qemu-aarch64 binfmt handler"
        update-binfmts --enable qemu-aarch64 || update-binfmts --import qemu-aarch64
    fi
    grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "qemu-aarch64 binfmt handler is not enabled"
    # NOTE: flag F (fix-binary) means the kernel opened the interpreter at registration, so the
    # root needs no copy of qemu; without it, the chroot must contain the interpreter path.
    if ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
        local interp
        interp="$(sed -n 's/^interpreter //p' /proc/sys/fs/binfmt_misc/qemu-aarch64)"
        mkdir -p "$ROOT$(dirname "$interp")"
        cp -f "$interp" "$ROOT$interp"
    fi
}

# The Debian mirror apt already uses (deb822 .sources or one-line sources.list); an Ubuntu host's
# mirror carries no Debian suite, so fall back to deb.debian.org there.
apt_mirror() {
    [ -n "${EDGESEQ_ARM_MIRROR:-}" ] && { echo "$EDGESEQ_ARM_MIRROR"; return; }
    local m=""
    m="$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" {for (i=2;i<=NF;i++) if ($i !~ /-(security|updates|backports)$/) {print u; exit}}' \
            /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v -e security -e ubuntu | head -n1 || true)"
    [ -z "$m" ] && m="$(grep -h -E '^deb[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
            | awk '{for (i=2;i<=NF;i++) if ($i ~ /^[a-z]+:\/\//) {print $i; break}}' \
            | grep -E '/debian/?$' | grep -v security | head -n1 || true)"
    echo "${m:-http://deb.debian.org/debian}"
}

bootstrap_stage1() {
    if [ -e "$ROOT/.edgeseq-stage1" ]; then return 0; fi
    local mirror; mirror="$(apt_mirror)"
    log "debootstrap --foreign arm64 $SUITE into $ROOT from $mirror"
    # A half-made root from an interrupted run is removed; anything else at that path is not ours.
    case "$(readlink -m "$ROOT")" in /|/*/*) ;; *) die "EDGESEQ_ARM_ROOT=$ROOT: choose a path at least two levels deep";; esac
    if [ -d "$ROOT" ] && [ -n "$(ls -A "$ROOT")" ] && [ ! -d "$ROOT/debootstrap" ]; then
        die "$ROOT exists, is not empty and is not an unfinished debootstrap root; refusing to delete it"
    fi
    [ "$(readlink -m "$ROOT")" = / ] && die "refusing to use / as the root"
    rm -rf "$ROOT"; mkdir -p "$ROOT"
    "${NICE[@]}" debootstrap --arch=arm64 --foreign --variant=minbase "$SUITE" "$ROOT" "$mirror" >"$ROOT.debootstrap.log" 2>&1 \
        || { tail -n 20 "$ROOT.debootstrap.log" >&2; die "debootstrap stage 1 failed (log: $ROOT.debootstrap.log)"; }
    echo "$mirror" >"$ROOT/.edgeseq-stage1"
}

# The CA bundle pip uses on the host (TLS-intercepting proxies sign with their own CA) and the
# host's PyPI index if it is a network mirror; file:// indexes are x86 wheel caches, not copied.
host_pip_setting() {
    local key="$1" env="$2" v="${!2:-}"
    [ -z "$v" ] && v="$(pip3 config get "$key" 2>/dev/null || python3 -m pip config get "$key" 2>/dev/null || true)"
    echo "$v"
}

write_pip_config() {
    local cert index extra urls=""
    cert="$(host_pip_setting global.cert PIP_CERT)"
    [ -z "$cert" ] && cert="${SSL_CERT_FILE:-${REQUESTS_CA_BUNDLE:-}}"
    [ -z "$cert" ] && [ -e /etc/ssl/certs/ca-certificates.crt ] && cert=/etc/ssl/certs/ca-certificates.crt
    mkdir -p "$ROOT/etc/edgeseq"
    if [ -n "$cert" ] && [ -e "$cert" ]; then
        cp -f "$cert" "$ROOT/etc/edgeseq/host-ca.crt"
    fi
    index="$(host_pip_setting global.index-url PIP_INDEX_URL)"
    extra="$(host_pip_setting global.extra-index-url PIP_EXTRA_INDEX_URL)"
    for u in $extra; do case "$u" in http://*|https://*) urls="$urls $u";; esac; done
    {
        echo "[global]"
        [ -e "$ROOT/etc/edgeseq/host-ca.crt" ] && echo "cert = /etc/edgeseq/host-ca.crt"
        case "$index" in http://*|https://*) echo "index-url = $index";; esac
        [ -n "$urls" ] && echo "extra-index-url =$urls"
        echo "only-binary = :all:"
        echo "disable-pip-version-check = true"
        echo "timeout = 180"
    } >"$ROOT/etc/pip.conf"
}

make_cpuinfo() {
    local n i out="$ROOT/etc/edgeseq/cpuinfo"
    n="$(nproc --all)"
    mkdir -p "$ROOT/etc/edgeseq"; : >"$out"
    for ((i = 0; i < n; i++)); do sed "s/@N@/$i/" "$HERE/cpuinfo-${ARM_CPU}.template" >>"$out"; done
}

copy_checkout() {
    log "copying the checkout $REPO -> $ROOT$SRC"
    rm -rf "$ROOT$SRC"; mkdir -p "$ROOT$SRC"
    tar -C "$REPO" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' \
        --exclude=build --exclude=dist --exclude=.pytest_cache --exclude=.hypothesis -cf - . \
        | tar -C "$ROOT$SRC" -xf -
}

# x86 reference outputs for the end-to-end part: same inputs, same source snapshot, same
# numpy/numba/onnxruntime versions as the root (pinned from its `pip freeze`), run on this host.
# NOTE: the x86 side installs the snapshot copied into the root, not the live checkout, so both
# machines run identical edgeseq code even while the checkout is being edited.
x86_venv() {
    local venv="$ROOT.x86-venv" base="${EDGESEQ_HOST_PYTHON:-}"
    [ -z "$base" ] && [ -x "$REPO/.venv/bin/python" ] && base="$REPO/.venv/bin/python"
    [ -z "$base" ] && base=python3
    if [ ! -x "$venv/bin/python" ]; then
        if [ "$base" = python3 ] && ! python3 -c "import ensurepip" 2>/dev/null; then
            # Debian/Ubuntu split venv support out of python3
            DEBIAN_FRONTEND=noninteractive "${NICE[@]}" apt-get install -y -qq python3-venv >/dev/null
        fi
        log "creating x86 reference venv $venv (from $base)"
        "$base" -m venv "$venv" >&2
    fi
    local pins
    pins="$(grep -i -E '^(numpy|numba|llvmlite|safetensors|threadpoolctl|onnx|onnxruntime|protobuf|ml.dtypes)==' \
            "$ROOT$WORK/freeze.txt" | tr '\n' ' ')"
    # (sed drops pip's warnings about a host's local file:// indexes that lack a package)
    # shellcheck disable=SC2086
    "${NICE[@]}" "$venv/bin/pip" install -q --only-binary=:all: $pins 2>&1 | sed '/^WARNING: Location/d' >&2
    "${NICE[@]}" "$venv/bin/pip" install -q --no-deps --only-binary=:all: "silero-vad==$SILERO_VERSION" 2>&1 \
        | sed '/^WARNING: Location/d' >&2
    rm -rf "$venv"/lib/python3*/site-packages/edgeseq     # stale Numba caches, as in the root
    "${NICE[@]}" "$venv/bin/pip" install -q --no-deps --force-reinstall "$ROOT$SRC" 2>&1 | sed '/^WARNING: Location/d' >&2
    echo "$venv/bin/python"
}

emit_x86_reference() {
    local py; py="$(x86_venv)"
    log "x86 reference outputs with $py ($("$py" -c 'import numpy, numba, onnxruntime as o; print("numpy", numpy.__version__, "numba", numba.__version__, "onnxruntime", o.__version__)'))"
    rm -rf "$ROOT$WORK/x86"; mkdir -p "$ROOT$WORK/x86"
    "${NICE[@]}" "$py" "$ROOT$SRC/tools/arm/e2e_check.py" emit "$ROOT$WORK/x86" >"$ROOT$WORK/x86-emit.log" 2>&1 \
        || { cat "$ROOT$WORK/x86-emit.log" >&2; return 1; }
    cat "$ROOT$WORK/x86-emit.log" >&2
}

# Precompiled artifacts: the host compiles the demo classifier and silero for each of
# AOT_TARGETS with `edgeseq compile`, and records its own (JIT) outputs.
emit_aot_reference() {
    local py; py="$(x86_venv)"
    log "x86: edgeseq compile --target {${AOT_TARGETS// /,}} with $py"
    rm -rf "$ROOT$WORK/aot"; mkdir -p "$ROOT$WORK/aot"
    "${NICE[@]}" "$py" "$ROOT$SRC/tools/arm/aot_check.py" emit "$ROOT$WORK/aot" \
        --targets "${AOT_TARGETS// /,}" >"$ROOT$WORK/aot-emit.log" 2>&1 \
        || { cat "$ROOT$WORK/aot-emit.log" >&2; return 1; }
    cat "$ROOT$WORK/aot-emit.log" >&2
}

# ---------------------------------------------------------------------------------------------
# inside the private mount namespace
# ---------------------------------------------------------------------------------------------
# CPU seconds (user + sys) used by finished child processes: on a shared host the wall time of
# an emulated run depends on the load; its CPU time much less. `times` must run in this shell
# (not in a $(...) subshell) to see this shell's children, hence a file.
snap_times() { times >"$ROOT.times"; }
cpu_seconds() {   # line 2 of `times`: "0m1.500s 0m0.250s"
    awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, m, "m"); s += m[1] * 60 + m[2] }
                   printf "%d", s + 0.5 }' "$ROOT.times"
}

MOUNTED=()
cleanup_mounts() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
        umount "${MOUNTED[$i]}" 2>/dev/null || umount -l "${MOUNTED[$i]}" 2>/dev/null || true
    done
    MOUNTED=()
}

mount_root() {
    mount -t proc proc "$ROOT/proc"; MOUNTED+=("$ROOT/proc")
    mount -t sysfs sysfs "$ROOT/sys"; MOUNTED+=("$ROOT/sys")
    mount --bind /dev "$ROOT/dev"; MOUNTED+=("$ROOT/dev")
    mount --make-private "$ROOT/dev"
    mkdir -p "$ROOT/dev/pts" "$ROOT/dev/shm"
    mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"; MOUNTED+=("$ROOT/dev/pts")
    mount -t tmpfs -o mode=1777 tmpfs "$ROOT/dev/shm"; MOUNTED+=("$ROOT/dev/shm")
    # NOTE: onnxruntime's cpuinfo aborts on import when /proc/cpuinfo describes the x86 host;
    # LLVM (Numba) also reads "CPU part" here to pick its target CPU.
    mount --bind "$ROOT/etc/edgeseq/cpuinfo" "$ROOT/proc/cpuinfo"; MOUNTED+=("$ROOT/proc/cpuinfo")
}

# Run a command in the root with a clean environment.
in_root() {
    local cert_env=()
    if [ -e "$ROOT/etc/edgeseq/host-ca.crt" ]; then
        cert_env=(PIP_CERT=/etc/edgeseq/host-ca.crt REQUESTS_CA_BUNDLE=/etc/edgeseq/host-ca.crt
                  SSL_CERT_FILE=/etc/edgeseq/host-ca.crt)
    fi
    "${NICE[@]}" chroot "$ROOT" /usr/bin/env -i HOME=/root LANG=C.UTF-8 TERM=dumb \
        PATH=$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        QEMU_CPU="$ARM_CPU" DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 "${cert_env[@]}" "$@"
}

inside_namespace() {   # $1: setup | run
    trap cleanup_mounts EXIT
    trap 'exit 130' INT TERM
    export QEMU_CPU="$ARM_CPU"
    if [ "$1" = run ]; then
        mount_root
        run_parts
        return
    fi
    if [ ! -e "$ROOT/.edgeseq-stage2" ]; then
        log "debootstrap second stage (emulated; several minutes)"
        "${NICE[@]}" chroot "$ROOT" /debootstrap/debootstrap --second-stage >"$ROOT.stage2.log" 2>&1 \
            || { tail -n 20 "$ROOT.stage2.log" >&2; die "debootstrap second stage failed (log: $ROOT.stage2.log)"; }
        touch "$ROOT/.edgeseq-stage2"
    fi
    mount_root
    cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf" 2>/dev/null || true
    if [ ! -e "$ROOT/.edgeseq-python" ]; then
        log "apt-get install python3.11 python3.11-venv python3-pip (emulated)"
        in_root apt-get update -qq
        in_root apt-get install -y -qq --no-install-recommends python3.11 python3.11-venv python3-pip ca-certificates >/dev/null
        touch "$ROOT/.edgeseq-python"
    fi
    if [ ! -x "$ROOT$VENV/bin/python" ]; then
        log "creating venv $VENV in the root"
        in_root python3.11 -m venv "$VENV"
    fi
    # NOTE: remove the previous install with its Numba cache files (pip leaves *.nbi/*.nbc
    # behind): a cached kernel compiled against an older version of a module it calls is not
    # invalidated by Numba and can crash. Every run therefore starts cold.
    log "pip install edgeseq from the checkout (pure-Python wheel built in the root)"
    rm -rf "$ROOT$VENV"/lib/python3*/site-packages/edgeseq
    if ! in_root python -c "import setuptools, wheel" 2>/dev/null; then
        in_root pip install -q --only-binary=:all: "setuptools>=68" wheel
    fi
    in_root pip install -q --no-deps --force-reinstall --no-build-isolation "$SRC"
    # edgeseq's declared dependencies (core + [onnx]; not torch: a board does not need it and
    # the emulated subset does not use it), read from the installed metadata, aarch64 wheels only
    if ! in_root python "$SRC/tools/arm/check_deps.py" onnx 2>/dev/null; then
        local reqs; reqs="$(in_root python "$SRC/tools/arm/check_deps.py" --list onnx | tr '\n' ' ')"
        log "pip install (aarch64 wheels only): $reqs"
        # shellcheck disable=SC2086
        in_root pip install -q --only-binary=:all: $reqs
        in_root python "$SRC/tools/arm/check_deps.py" onnx || die "edgeseq's declared dependencies are not satisfied in the root"
    fi
    local tools="pytest hypothesis silero-vad==$SILERO_VERSION"
    if [ "$(cat "$ROOT/.edgeseq-tools" 2>/dev/null)" != "$tools" ]; then
        log "pip install test tools: $tools (silero-vad without its torch dependency)"
        in_root pip install -q --only-binary=:all: pytest hypothesis
        in_root pip install -q --only-binary=:all: --no-deps "silero-vad==$SILERO_VERSION"
        echo "$tools" >"$ROOT/.edgeseq-tools"
    fi

    in_root pip freeze >"$ROOT$WORK/freeze.txt"
    touch "$ROOT$WORK/setup-ok"
}

run_parts() {
    local results=() part t0 c0 rc
    for part in $PARTS; do
        t0=$SECONDS; snap_times; c0=$(cpu_seconds); rc=0
        case "$part" in
            import)  in_root python "$SRC/tools/arm/env_report.py" || rc=$? ;;
            kernels) run_kernel_tests || rc=$? ;;
            # a fresh Numba cache: the e2e "compile" column is then the cold start on a board
            e2e)     rm -rf "$ROOT$WORK/numba-cache"
                     in_root NUMBA_CACHE_DIR="$WORK/numba-cache" python "$SRC/tools/arm/e2e_check.py" check "$WORK/x86" || rc=$? ;;
            board)   run_board_check || rc=$? ;;
            aot)     run_aot_check || rc=$? ;;
            *) die "unknown part '$part' (known: import kernels e2e board aot)" ;;
        esac
        snap_times
        results+=("$part:$rc:$((SECONDS - t0)):$(( $(cpu_seconds) - c0 ))")
    done
    printf '%s\n' "${results[@]}" >"$ROOT$WORK/results"
}

# What a board installs: the edgeseq wheel with no extras. It must load and run the x86-made
# artifacts without onnx, onnxruntime or the converters' dependencies.
run_board_check() {
    rm -rf "$ROOT$WORK/wheel" "$ROOT$BOARD_VENV" "$ROOT$WORK/numba-cache-board"
    in_root pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel" "$SRC" || return 1
    in_root python3.11 -m venv "$BOARD_VENV" || return 1
    local whl; whl="$(cd "$ROOT$WORK/wheel" && ls edgeseq-*.whl)"
    in_root "$BOARD_VENV/bin/pip" install -q --only-binary=:all: "$WORK/wheel/$whl" || return 1
    log "board venv: $(in_root "$BOARD_VENV/bin/pip" list --format=freeze 2>/dev/null | tr '\n' ' ')"
    log "board venv size: $(du -sh "$ROOT$BOARD_VENV" | cut -f1) (python3.11 itself not counted)"
    if in_root "$BOARD_VENV/bin/python" -c "import onnx" 2>/dev/null \
        || in_root "$BOARD_VENV/bin/python" -c "import onnxruntime" 2>/dev/null; then
        log "board venv unexpectedly has onnx/onnxruntime"; return 1
    fi
    in_root NUMBA_CACHE_DIR="$WORK/numba-cache-board" "$BOARD_VENV/bin/python" \
        "$SRC/tools/arm/e2e_check.py" check --artifacts-only "$WORK/x86"
}

# Installed size of a venv's site-packages: all, without NumPy (and pip/setuptools, which every
# venv has), and edgeseq alone; in MB (du -k summed, so rounding does not add up).
site_size() {
    local site="$1" skip='/(numpy|numpy\.libs|numpy-[^/]*|pip|pip-[^/]*|setuptools|setuptools-[^/]*|pkg_resources|_distutils_hack|distutils-precedence\.pth)$'
    du -sk "$site"/* | awk -v skip="$skip" '{all += $1; if ($2 !~ skip) rest += $1; if ($2 ~ /\/edgeseq$/) e = $1}
        END {printf "site-packages %.1f MB; without NumPy, pip and setuptools %.1f MB (edgeseq %.1f MB)", all/1024, rest/1024, e/1024}'
}

# The board runtime (docs/arm.md "Precompiled artifacts on the board"): edgeseq's core
# dependencies except numba, then edgeseq itself with --no-deps; it runs the host-compiled
# artifacts in fresh processes, compares with x86, and refuses code for a CPU it is not.
run_aot_check() {
    [ -e "$ROOT$WORK/aot/manifest.json" ] || { log "no host-compiled artifacts"; return 1; }
    rm -rf "$ROOT$WORK/wheel-aot" "$ROOT$AOT_VENV"
    in_root pip wheel -q --no-deps --no-build-isolation -w "$WORK/wheel-aot" "$SRC" || return 1
    in_root python3.11 -m venv "$AOT_VENV" || return 1
    local whl deps; whl="$(cd "$ROOT$WORK/wheel-aot" && ls edgeseq-*.whl)"
    deps="$(in_root python "$SRC/tools/arm/check_deps.py" --list | grep -v -i -E '^(numba|llvmlite)\b' | tr '\n' ' ')"
    log "board runtime: pip install $deps; pip install --no-deps $whl"
    # shellcheck disable=SC2086
    in_root "$AOT_VENV/bin/pip" install -q --only-binary=:all: $deps || return 1
    in_root "$AOT_VENV/bin/pip" install -q --no-deps "$WORK/wheel-aot/$whl" || return 1
    local site; site="$(echo "$ROOT$AOT_VENV"/lib/python3*/site-packages)"
    log "board runtime venv: $(in_root "$AOT_VENV/bin/pip" list --format=freeze 2>/dev/null | tr '\n' ' ')"
    log "board runtime size: $(site_size "$site")"
    if in_root "$AOT_VENV/bin/python" -c "import numba" 2>/dev/null \
        || in_root "$AOT_VENV/bin/python" -c "import llvmlite" 2>/dev/null; then
        log "board runtime venv unexpectedly has numba/llvmlite"; return 1
    fi
    local first="${AOT_TARGETS%% *}" rc=0 t
    in_root QEMU_CPU="$first" "$AOT_VENV/bin/python" "$SRC/tools/arm/aot_check.py" check "$WORK/aot" --target "$first" || rc=1
    for t in ${AOT_TARGETS#* }; do
        # code for a richer core under QEMU_CPU=$first: refused before any call (never SIGILL);
        # --control runs it once more with the feature check bypassed, to show it would fault
        in_root QEMU_CPU="$first" "$AOT_VENV/bin/python" "$SRC/tools/arm/aot_check.py" refuse "$WORK/aot" --target "$t" --control || rc=1
        # on that core, its own code and the older core's code both run
        in_root QEMU_CPU="$t" "$AOT_VENV/bin/python" "$SRC/tools/arm/aot_check.py" check "$WORK/aot" --target "$t" || rc=1
        in_root QEMU_CPU="$t" "$AOT_VENV/bin/python" "$SRC/tools/arm/aot_check.py" check "$WORK/aot" --target "$first" || rc=1
        # with Numba installed (the root's full venv) the declined code's model runs on the JIT
        rm -rf "$ROOT$WORK/numba-cache-aot"
        in_root QEMU_CPU="$first" NUMBA_CACHE_DIR="$WORK/numba-cache-aot" python "$SRC/tools/arm/aot_check.py" \
            refuse "$WORK/aot" --target "$t" --allow-jit --cases demo_classifier || rc=1
    done
    return "$rc"
}

run_kernel_tests() {
    local args
    if [ -n "${EDGESEQ_ARM_PYTEST:-}" ]; then
        args="$EDGESEQ_ARM_PYTEST"
    else
        args="$(grep -v '^[[:space:]]*#' "$HERE/kernel-tests.txt" | tr '\n' ' ')"
    fi
    # NOTE: run the venv's pytest from the copied tree: tests import the installed edgeseq (the
    # sibling folders runtime/, converters/ only exist as edgeseq.* once installed).
    # shellcheck disable=SC2086
    in_root /usr/bin/env -C "$SRC" pytest -p no:cacheprovider -q -o addopts="--import-mode=importlib" $args
}

# ---------------------------------------------------------------------------------------------
main() {
    [ "$(id -u)" = 0 ] || die "run as root (debootstrap, chroot and mounts need it)"
    [ -e "$HERE/cpuinfo-${ARM_CPU}.template" ] || die "no cpuinfo template for EDGESEQ_ARM_CPU=$ARM_CPU in $HERE"
    local t_start=$SECONDS
    # one run per root at a time: a second one would re-copy the source and reinstall the venv
    # under the first one's tests (seen when two runs shared the default root)
    exec 9>"$ROOT.lock"
    flock -n 9 || die "another run-aarch64.sh is using $ROOT ($ROOT.lock); wait, or set EDGESEQ_ARM_ROOT"
    host_packages
    enable_binfmt
    bootstrap_stage1
    write_pip_config
    make_cpuinfo
    copy_checkout
    mkdir -p "$ROOT$WORK"; rm -f "$ROOT$WORK/results" "$ROOT$WORK/setup-ok"
    local x86_ok=0
    # A private mount namespace: every mount below dies with it, whatever happens to this script.
    unshare --mount --propagation private -- bash "$SELF" __inside setup || true
    if [ -e "$ROOT$WORK/setup-ok" ]; then
        case " $PARTS " in *" e2e "*|*" board "*) emit_x86_reference || x86_ok=$? ;; esac
        case " $PARTS " in *" aot "*) emit_aot_reference || x86_ok=$? ;; esac
        unshare --mount --propagation private -- bash "$SELF" __inside run || true
    fi
    # belt and braces: nothing of ours may stay mounted in the host namespace
    if grep -q " $ROOT/" /proc/mounts; then
        log "WARNING: mounts under $ROOT remain in the host namespace:"; grep " $ROOT/" /proc/mounts >&2
    fi

    local line part rc secs cpu status all=0
    echo
    echo "==== edgeseq on emulated aarch64 ($ARM_CPU via qemu-user; timings are EMULATION, not board speed) ===="
    [ "$x86_ok" = 0 ] || { echo "x86-reference  FAIL  (could not produce x86 outputs)"; all=1; }
    if [ -e "$ROOT$WORK/results" ]; then
        while IFS= read -r line; do
            IFS=: read -r part rc secs cpu <<<"$line"
            if [ "$rc" = 0 ]; then status=PASS; else status=FAIL; all=1; fi
            printf '%-14s %s  (emulated: %ss wall, %ss CPU; exit %s)\n' "$part" "$status" "$secs" "$cpu" "$rc"
        done <"$ROOT$WORK/results"
    else
        echo "setup          FAIL  (the emulated root could not be prepared; see messages above)"; all=1
    fi
    for part in $PARTS; do
        grep -q "^$part:" "$ROOT$WORK/results" 2>/dev/null || { printf '%-14s FAIL  (did not run)\n' "$part"; all=1; }
    done
    printf 'total          %ss wall\n' "$((SECONDS - t_start))"
    if [ "$all" = 0 ]; then echo "RESULT: PASS"; else echo "RESULT: FAIL"; fi
    return "$all"
}

# NOTE: one line, ending in exit: bash reads a script as it runs, so an edit to this file
# during a run must not be read after main returns.
if [ "${1:-}" = __inside ]; then inside_namespace "$2"; exit $?; else main "$@"; exit $?; fi
