# Shared by scripts/qemu-test and scripts/qemu-run-demo (sourced, not run).
# Expects $root (the repository) to be set.

targets="$root/targets"

# Installs the thumb targets, defmt-print and qemu-system-arm when missing.
ensure_qemu() {
    local installed
    installed="$(rustup target list --installed)"
    for t in thumbv6m-none-eabi thumbv7m-none-eabi thumbv7em-none-eabihf thumbv8m.main-none-eabihf; do
        grep -qx "$t" <<<"$installed" || rustup target add "$t"
    done
    if ! command -v defmt-print >/dev/null 2>&1; then
        echo "installing defmt-print (cargo install, about 2 minutes)"
        cargo install --quiet --locked defmt-print --version "^1"
    fi
    if ! command -v qemu-system-arm >/dev/null 2>&1; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "installing qemu-system-arm (Debian)"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq qemu-system-arm >/dev/null
    fi
}

# Reads targets/MACHINE/machine.conf into TARGET, TARGET_CPU, QEMU_MACHINE, QEMU_CPU.
load_machine() {
    local conf="$targets/$1/machine.conf"
    [ -f "$conf" ] || { echo "unknown machine $1 (no $conf)" >&2; return 1; }
    TARGET="" TARGET_CPU="" QEMU_MACHINE="" QEMU_CPU=""
    # shellcheck disable=SC1090
    . "$conf"
}

# Builds the firmware binaries (release) for MACHINE and copies them to
# targets/target/elf/MACHINE/; sets ELF_DIR and LOG_DIR. One shared target dir: host-side
# build dependencies are built once; the ELFs are copied out because machines that share a
# target triple overwrite each other's.
build_firmware() {
    local machine="$1"
    load_machine "$machine" || return 1
    ELF_DIR="$targets/target/elf/$machine"
    LOG_DIR="$targets/target/logs"
    mkdir -p "$ELF_DIR" "$LOG_DIR"
    local flags=""
    [ -z "$TARGET_CPU" ] || flags="-C target-cpu=$TARGET_CPU"
    # FIRMWARE_BINS (e.g. "bench"): build and copy only these binaries.
    local sel=(--bins) copy=(conformance bench demo) bin
    if [ -n "${FIRMWARE_BINS:-}" ]; then
        sel=() copy=()
        for bin in $FIRMWARE_BINS; do sel+=(--bin "$bin"); copy+=("$bin"); done
    fi
    (cd "$targets" && RUSTFLAGS="$flags" cargo build --quiet --release --target "$TARGET" -p microattn-firmware \
        --features "$machine" "${sel[@]}") || return 1
    for bin in "${copy[@]}"; do
        cp "$targets/target/$TARGET/release/$bin" "$ELF_DIR/"
    done
}

# Prints the path of an LLVM tool (llvm-objdump, llvm-nm, llvm-size) matching rustc's LLVM,
# from rustup's llvm-tools component (installed when missing).
llvm_tool() {
    local bin
    bin="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/$1"
    if [ ! -x "$bin" ]; then
        rustup component add llvm-tools >/dev/null 2>&1 || true
    fi
    if [ -x "$bin" ]; then
        echo "$bin"
    elif command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
    else
        echo "no $1 (rustup component add llvm-tools)" >&2
        return 1
    fi
}

# run_qemu MACHINE ELF TIMEOUT [ARG...]: runs ELF under QEMU with semihosting and decodes its
# defmt output with defmt-print; the exit status is the firmware's (0 success, 1
# failure/panic/fault), 124 on timeout, or defmt-print's if decoding failed. Extra QEMU
# options come from $QEMU_EXTRA_ARGS (e.g. "-icount shift=0").
run_qemu() {
    local machine="$1" elf="$2" limit="$3"
    shift 3
    load_machine "$machine" || return 1
    local semi="enable=on,target=native,arg=$(basename "$elf")"
    for a in "$@"; do semi="$semi,arg=$a"; done
    local status
    # shellcheck disable=SC2086 # word splitting of the extra options is intended
    timeout "$limit" qemu-system-arm -machine "$QEMU_MACHINE" -cpu "$QEMU_CPU" -nographic \
        -monitor none -serial none ${QEMU_EXTRA_ARGS:-} -semihosting-config "$semi" -kernel "$elf" |
        defmt-print -e "$elf" --log-format "{s}"
    status=("${PIPESTATUS[@]}")
    [ "${status[0]}" -eq 0 ] || return "${status[0]}"
    return "${status[1]}"
}

# reachable_code OBJDUMP ELF SYMBOL CPU: the disassembly (for CPU, e.g. cortex-m55, whose
# Helium instructions only disassemble with the CPU named) of SYMBOL and of every function it
# reaches by direct calls or tail calls (bl, b.w, conditional branches to another symbol).
reachable_code() {
    local objdump="$1" elf="$2" root="$3" cpu="$4"
    "$objdump" -d --no-show-raw-insn --mcpu="$cpu" "$elf" | awk -v root="$root" '
        /^[0-9a-f]+ <[^>]+>:$/ { f = $2; gsub(/[<>:]/, "", f); order[++n] = f; next }
        f != "" { body[f] = body[f] $0 "\n" }
        f != "" && /\tb(l|lx|\.w|eq|ne|cs|cc|mi|pl|hi|ls|ge|lt|gt|le)?(\.w)?\t/ {
            if (match($0, /<[^>]+>/)) {
                t = substr($0, RSTART + 1, RLENGTH - 2)
                if (t !~ /\+0x/ && t != f) edges[f] = edges[f] " " t
            }
        }
        END {
            m = 1; queue[1] = root; seen[root] = 1
            for (i = 1; i <= m; i++) {
                k = split(edges[queue[i]], next_, " ")
                for (j = 1; j <= k; j++) if (!(next_[j] in seen)) { seen[next_[j]] = 1; queue[++m] = next_[j] }
            }
            for (i = 1; i <= m; i++) printf "<%s>:\n%s", queue[i], body[queue[i]]
        }'
}
