#!/usr/bin/env bash
# gpu-run.sh — the CUDA engine's and the GPU trainer's first run on a lent
# GPU machine (docs/cuda.md#the-first-gpu-run), in one device call:
#
#   bench/gpu-run.sh prepare     on a CPU build machine: builds the binaries
#                                (e2gan, e2gan-gpu-check, e2gan-gpu-train-check)
#                                into build-gpu/ with RPATH $ORIGIN/lib, strips
#                                them, copies the shared libraries the GPU
#                                machine lacks into build-gpu/lib (xz-compressed
#                                when large), checks every NEEDED library and
#                                symbol version against the GPU machine, asserts
#                                the carried folder is < 64 MiB, and prints the
#                                device call to make (carry build-gpu)
#   bench/gpu-run.sh             on the GPU machine: every step below, each with
#                                its own timeout and log in $OUT/logs, past any
#                                failure, then one table of every result and
#                                $OUT/bench/results/gpu-<date>-<commit>.md
#   bench/gpu-run.sh --dry-run   on a CPU machine (ctest gpu_run_dry): prepare,
#                                then the same steps, those needing a GPU
#                                reported "skipped: no GPU" after checking that
#                                their command line is accepted (our binaries
#                                must answer "no CUDA device", exit 3)
#
# Steps: the environment (ldd of every carried binary, nvidia-smi), unpacking
# the compressed libraries, probe, calibration (PyTorch bf16 vs fp32 on the
# same shapes and weights: the tolerances the checks use), every op check in
# its own process with CUDA_LAUNCH_BLOCKING=1, the whole-model checks (base,
# each adapter unmerged and merged, blend, mixed batch, batch of one adapter
# merged, eager vs graph capture vs replay), a fault injected to prove the
# dead-device fallback, the inference benchmark one configuration per process,
# PyTorch eager bf16 beside it, the trainer's gradient checks and step
# benchmarks beside PyTorch, and compute-sanitizer memcheck on the op checks
# while time remains.  A sticky CUDA fault kills only its own process.
#
# Environment: OUT (results; default build-gpu-out/<time>), E2G_GPU_DIST
# (default build-gpu; build-gpu-dry for --dry-run), E2G_GPU_BUDGET (seconds for all steps, default 480:
# under the device call's 540), E2G_GPU_BUILD (prepare: take the binaries
# from this existing build folder instead of building), PYTHON (python3).
# Exit status: 0 when every step that ran passed, 1 otherwise (2: usage).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIST=${E2G_GPU_DIST:-$ROOT/build-gpu}
[ "${1:-}" != --dry-run ] || DIST=${E2G_GPU_DIST:-$ROOT/build-gpu-dry} # never the folder to carry
PY=${PYTHON:-python3}
CARRY_LIMIT=$((64 * 1024 * 1024))
BINARIES="e2gan e2gan-gpu-check e2gan-gpu-train-check"
# What the GPU machine has (docs/cuda.md#the-gpu-machine): Ubuntu 24.04's base
# system, the listed libraries, the driver and cuDNN 9.14.  Anything else a
# binary needs is carried.
BASE_SYSTEM="linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libdl.so.2 librt.so.1 libpthread.so.0 libstdc++.so.6 libgcc_s.so.1 libz.so.1"
GPU_MACHINE="libjansson.so.4 libpng16.so.16 libjpeg.so.8 libopenblas.so.0 libgomp.so.1 libcudnn.so.9 libcuda.so.1"
# Ubuntu 24.04: glibc 2.39, gcc 13's libstdc++.
MAX_GLIBC=2.39 MAX_GLIBCXX=3.4.32 MAX_CXXABI=1.3.15
COMPRESS_ABOVE=$((1024 * 1024))

die() {
    echo "gpu-run: $*" >&2
    exit 1
}

mode=run
case "${1:-}" in
prepare) mode=prepare ;;
--dry-run) mode=dry ;;
"") ;;
*)
    echo "usage: bench/gpu-run.sh [prepare | --dry-run]" >&2
    exit 2
    ;;
esac

# ---- prepare ------------------------------------------------------------------------------

# version_le A B: A ≤ B as dotted versions.
version_le() { [ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -1)" = "$1" ]; }

prepare() {
    local build=${E2G_GPU_BUILD:-}
    if [ -z "$build" ]; then
        build=$ROOT/build-gpu-obj
        echo "== building $BINARIES in $build (Release, -Werror)"
        CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc} cmake -S "$ROOT" -B "$build" -DCMAKE_BUILD_TYPE=Release \
            -DE2G_WERROR=ON -DBUILD_TESTING=OFF >/dev/null || die "cmake configure failed"
        # shellcheck disable=SC2086
        cmake --build "$build" --target $BINARIES -j"$(nproc)" || die "build failed"
    fi
    for b in $BINARIES; do [ -x "$build/$b" ] || die "$build/$b missing (a build with CUDA?)"; done
    rm -rf "$DIST.tmp" && mkdir -p "$DIST.tmp/lib"
    for b in $BINARIES; do
        cp "$build/$b" "$DIST.tmp/$b" && strip --strip-unneeded "$DIST.tmp/$b" || die "copying $b failed"
        readelf -d "$DIST.tmp/$b" | grep -q 'Library rpath: \[\$ORIGIN/lib\]' ||
            die "$b has no DT_RPATH \$ORIGIN/lib (CMakeLists.txt: E2G_GPU_BINARIES)"
    done

    echo "== NEEDED libraries (closure, as ldd resolves them here) against the GPU machine"
    local libs=() lib path where bad=0
    while read -r lib path; do
        [ -n "$lib" ] || continue
        if [[ " $BASE_SYSTEM " == *" $lib "* ]]; then
            where="base system (Ubuntu 24.04)"
        elif [[ " $GPU_MACHINE " == *" $lib "* || $lib == libcudnn* || $lib == libcublas* ]]; then
            where="on the GPU machine"
        elif [ -n "$path" ] && [ -f "$path" ]; then
            where="carried (from $path)"
            cp -L "$path" "$DIST.tmp/lib/$lib" || die "copying $path failed"
            libs+=("$lib")
        else
            where="MISSING: neither on the GPU machine nor found here"
            bad=1
        fi
        printf '  %-24s %s\n' "$lib" "$where"
    done < <(for b in $BINARIES; do env -u LD_LIBRARY_PATH ldd "$build/$b"; done |
        awk '$2 == "=>" { print $1, ($3 == "not" ? "" : $3) } $2 != "=>" && $1 ~ /\.so/ { n = split($1, p, "/"); print p[n], $1 }' |
        sort -u -k1,1)
    [ $bad -eq 0 ] || die "a needed library is missing"

    echo "== the carried binaries find the carried libraries through their RPATH (LD_LIBRARY_PATH unset)"
    for b in $BINARIES; do
        local out
        out=$(env -u LD_LIBRARY_PATH ldd "$DIST.tmp/$b")
        local n=0
        for lib in "${libs[@]}"; do
            echo "$out" | grep -q "^\s*$lib => " || continue # not one this binary needs
            echo "$out" | grep -q "$lib => $DIST.tmp/lib/$lib" ||
                die "$b: $lib resolves to $(echo "$out" | awk -v l="$lib" '$1 == l { print $3 }'), not lib/"
            n=$((n + 1))
        done
        ! echo "$out" | grep -q "not found" || die "$b: $(echo "$out" | grep 'not found')"
        echo "  $b: ok ($n carried libraries, all from lib/)"
    done

    echo "== symbol versions against Ubuntu 24.04 (glibc $MAX_GLIBC, GLIBCXX $MAX_GLIBCXX, CXXABI $MAX_CXXABI)"
    local f v max
    for f in "$DIST.tmp"/e2gan* "$DIST.tmp"/lib/*; do
        for kind in GLIBC GLIBCXX CXXABI; do
            max=$(objdump -T "$f" | grep -oE "\b${kind}_[0-9.]+" | sed "s/${kind}_//" | sort -V | tail -1)
            [ -n "$max" ] || continue
            eval "v=\$MAX_$kind"
            version_le "$max" "$v" || die "$(basename "$f") needs ${kind}_$max > $v"
        done
    done
    echo "  ok"

    echo "== compressing carried libraries over $((COMPRESS_ABOVE >> 20)) MiB (xz; unpacked on the GPU machine)"
    for lib in "${libs[@]}"; do
        f=$DIST.tmp/lib/$lib
        [ "$(stat -c %s "$f")" -gt $COMPRESS_ABOVE ] || continue
        local sum cache=$DIST/lib/$lib.xz
        sum=$(sha256sum "$f" | cut -d' ' -f1)
        if [ -f "$cache" ] && [ "$(cat "$cache.sha256" 2>/dev/null)" = "$sum" ]; then
            cp "$cache" "$f.xz" # unchanged since the last prepare
        else
            xz -T2 -6 -c "$f" >"$f.xz" || die "xz $lib failed"
        fi
        echo "$sum" >"$f.xz.sha256"
        rm "$f"
        echo "  $lib: $(stat -c %s "$f.xz") bytes compressed"
    done

    "$DIST.tmp/e2gan-gpu-check" dump-image "$ROOT/tests/data/chelsea.png" "$DIST.tmp/chelsea.npy" >/dev/null ||
        die "dump-image failed"
    local commit
    commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || commit="$commit-dirty"
    echo "$commit" >"$DIST.tmp/commit"
    (cd "$DIST.tmp" && find . -type f ! -name MANIFEST -exec sha256sum {} + | sort -k2) >"$DIST.tmp/MANIFEST"
    rm -rf "$DIST" && mv "$DIST.tmp" "$DIST" || die "cannot replace $DIST"

    local size
    size=$(du -sb "$DIST" | cut -f1)
    echo "== carried: $DIST, $size bytes ($((size * 100 / CARRY_LIMIT))% of 64 MiB)"
    [ "$size" -lt $CARRY_LIMIT ] || die "the carried folder is over 64 MiB"
    local rel=${DIST#"$ROOT"/}
    cat <<EOF

Device call (run tool), on the commit these binaries were built from ($commit):
  command:   bash bench/gpu-run.sh
  carry:     ["$rel"]
  timeout_s: 540
The run writes its logs, the table and bench/results/gpu-<date>-<commit>.md
under \$OUT; its last lines are the table of every step.
EOF
}

if [ $mode = prepare ]; then
    prepare
    exit $?
fi

# ---- the run -----------------------------------------------------------------------------

if [ $mode = dry ]; then
    prepare # exits on a failure
fi
[ -x "$DIST/e2gan-gpu-check" ] || die "$DIST/e2gan-gpu-check missing: run 'bench/gpu-run.sh prepare' and carry $DIST"
OUT=${OUT:-$ROOT/build-gpu-out/$(date +%Y%m%d-%H%M%S)}
rm -rf "$OUT/logs" && mkdir -p "$OUT/logs" "$OUT/bench/results" || die "cannot write $OUT"
BUDGET=${E2G_GPU_BUDGET:-480}
START=$(date +%s)
RESULTS=$OUT/steps.tsv
: >"$RESULTS"
CHECK=$DIST/e2gan-gpu-check
TCHECK=$DIST/e2gan-gpu-train-check
E2GAN=$DIST/e2gan
WORK=$(mktemp -d /tmp/e2g-gpu-run-XXXXXX) # models made on the way, not results
# the unpacked libraries go again at the end: the carried folder stays as prepared
trap 'if [ -f "$WORK/unpacked" ]; then xargs -r rm -f <"$WORK/unpacked"; fi; rm -rf "$WORK"' EXIT
export OMP_WAIT_POLICY=passive
# Where the libraries are unpacked: next to the carried ones, or — on a
# read-only carry — a folder of our own that LD_LIBRARY_PATH names.
LIBDIR=$DIST/lib
if ! touch "$DIST/lib/.w" 2>/dev/null; then LIBDIR=$WORK/lib; fi
rm -f "$DIST/lib/.w"
# skip NAME STATUS KEY: a step recorded without running.
skip() {
    nstep=$((nstep + 1))
    printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$RESULTS"
    printf '[%3ss] %-28s %-16s %.70s\n' "$(elapsed)" "$1" "$2" "$3"
}

# Our binaries find lib/ through their RPATH; LD_LIBRARY_PATH covers the
# read-only case.  Only our binaries get it (PyTorch keeps the system's).
R=(env "LD_LIBRARY_PATH=$LIBDIR")
export ROOT DIST LIBDIR WORK PY BINARIES OUT
nstep=0 failed=0

elapsed() { echo $(($(date +%s) - START)); }

# The program a step's command line runs (past env and VAR=value words).
cmd_of() {
    local a
    for a in "$@"; do
        case $a in
        env | *=*) continue ;;
        *) echo "$a" && return ;;
        esac
    done
}

# step NAME LIMIT KIND CMD...: runs CMD with its own timeout (LIMIT seconds,
# cut to what is left of the budget), its output in $OUT/logs/NN-NAME.log,
# and records status and key number (the log's last "SUMMARY" line, else
# its last line).  KIND: cpu (runs everywhere), gpu (needs the device; in a
# dry run our binaries must answer exit 3, anything else is skipped), torch
# (PyTorch on the device).  Never stops the script.
step() {
    local name=$1 limit=$2 kind=$3
    shift 3
    nstep=$((nstep + 1))
    local log
    log=$OUT/logs/$(printf '%02d' $nstep)-$(echo "$name" | tr '/: ' '___').log
    local left=$((BUDGET - $(elapsed))) status key rc t0
    if [ $mode = dry ] && [ "$kind" != cpu ]; then
        if [ "$kind" = gpu ] && [[ $(cmd_of "$@") == "$DIST"/* ]]; then
            timeout 60 "$@" >"$log" 2>&1
            rc=$?
            if [ $rc -eq 3 ]; then
                status="skipped: no GPU" key="command accepted, answered no CUDA device (exit 3)"
            else
                status="FAIL" key="expected exit 3 without a GPU, got $rc" failed=1
            fi
        else
            status="skipped: no GPU" key="" && echo "dry run: not run: $*" >"$log"
        fi
    elif [ "$kind" = torch ] && [ -z "$HAVE_TORCH" ]; then
        status="skipped: no PyTorch" key="" && echo "not run: $PY cannot import torch" >"$log"
    elif [ $left -lt 15 ]; then
        status="skipped: no time" key="${left}s of the budget left"
        echo "not run: ${left}s left" >"$log"
    else
        [ $limit -le $left ] || limit=$left
        t0=$(date +%s)
        {
            echo "\$ $*"
            echo "# limit ${limit}s, $(date -u +%H:%M:%SZ)"
        } >"$log"
        if [ "$(type -t "$1")" = function ]; then # our shell functions (exported)
            timeout -k 5 "$limit" bash -c '"$@"' _ "$@" >>"$log" 2>&1
        else
            timeout -k 5 "$limit" "$@" >>"$log" 2>&1
        fi
        rc=$?
        key=$(grep '^SUMMARY ' "$log" | tail -1 | cut -c9-)
        [ -n "$key" ] || key=$(grep -v '^\s*$' "$log" | tail -1)
        case $rc in
        0) status=ok ;;
        124 | 137) status="TIMEOUT" key="after ${limit}s; $key" failed=1 ;;
        3) status="FAIL: no GPU" failed=1 ;;
        *) status="FAIL ($rc)" failed=1 ;;
        esac
        key="$key ($(($(date +%s) - t0))s)"
    fi
    key=$(echo "$key" | tr '\t\n' '  ' | cut -c1-110)
    printf '%s\t%s\t%s\n' "$name" "$status" "$key" >>"$RESULTS"
    printf '[%3ss] %-28s %-16s %.70s\n' "$(elapsed)" "$name" "$status" "$key"
}

env_report() {
    echo "== host"
    uname -a
    head -2 /etc/os-release 2>/dev/null
    nproc
    echo "== carried binaries (built at $(cat "$DIST/commit"))"
    (cd "$DIST" && sha256sum -c --quiet MANIFEST) && echo "MANIFEST ok"
    local rc=0
    for b in $BINARIES; do
        echo "== ldd $b (LD_LIBRARY_PATH unset)"
        env -u LD_LIBRARY_PATH ldd "$DIST/$b" | tee "$WORK/ldd" || rc=1
        echo "== ldd $b (LD_LIBRARY_PATH=$LIBDIR)"
        env LD_LIBRARY_PATH="$LIBDIR" ldd "$DIST/$b" | tee -a "$WORK/ldd" || rc=1
        if grep -q "not found" "$WORK/ldd"; then
            echo "MISSING: $(grep 'not found' "$WORK/ldd" | tr '\n' ' ')"
            rc=1
        fi
    done
    echo "== nvidia-smi"
    if command -v nvidia-smi >/dev/null; then
        nvidia-smi
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
    else
        echo "no nvidia-smi"
    fi
    echo "== toolkit"
    ls /usr/lib/x86_64-linux-gnu/libcudnn*.so* 2>/dev/null | head -5
    command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null || echo "no compute-sanitizer"
    $PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -1
    local card
    card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
    echo "SUMMARY ${card:-no GPU}; libraries $([ $rc -eq 0 ] && echo resolved || echo MISSING)"
    return $rc
}

# Unpacks lib/*.xz into LIBDIR (lib/ itself, or a copy when the carry is
# read-only).
unpack_libs() {
    local f n=0
    if [ "$LIBDIR" != "$DIST/lib" ]; then
        mkdir -p "$LIBDIR" && cp -a "$DIST"/lib/. "$LIBDIR"/ || return 1
        echo "the carry is read-only: libraries in $LIBDIR"
    fi
    for f in "$LIBDIR"/*.xz; do
        [ -e "$f" ] || continue
        if command -v xz >/dev/null; then
            echo "${f%.xz}" >>"$WORK/unpacked"
            xz -dc "$f" >"${f%.xz}" || return 1
        else
            echo "${f%.xz}" >>"$WORK/unpacked"
            $PY -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' \
                "$f" "${f%.xz}" || return 1
        fi
        [ "$(sha256sum "${f%.xz}" | cut -d' ' -f1)" = "$(cat "$f.sha256")" ] || {
            echo "checksum mismatch: ${f%.xz}"
            return 1
        }
        n=$((n + 1))
    done
    echo "SUMMARY $n librar$([ $n -eq 1 ] && echo y || echo ies) unpacked into $LIBDIR"
}

export -f env_report unpack_libs

# The names a --list prints (one per line, first word), or a failed step
# "NAME/list" when the binary cannot even list them.
list_of() {
    local name=$1 out
    shift
    if out=$("$@" 2>&1) && [ -n "$out" ]; then
        echo "$out" | cut -d' ' -f1
    else
        nstep=$((nstep + 1)) failed=1
        printf '%s\tFAIL\t%s\n' "$name/list" "$(echo "$out" | tail -1 | cut -c1-100)" >>"$RESULTS"
        echo "$out" >"$OUT/logs/$(printf '%02d' $nstep)-${name}_list.log"
    fi
}

HAVE_TORCH=
[ $mode = dry ] || ! timeout 60 "$PY" -c 'import torch' 2>/dev/null || HAVE_TORCH=1
echo "gpu-run ($mode): out $OUT, budget ${BUDGET}s, binaries $(cat "$DIST/commit"), PyTorch ${HAVE_TORCH:-absent}"
BASE=$ROOT/models/e2gan-s.safetensors
IMAGE=$ROOT/tests/data/chelsea.png
ADAPTERS=$(ls "$ROOT"/models/adapters/*.safetensors 2>/dev/null | tr '\n' ' ')

step unpack 60 cpu unpack_libs
step env 30 cpu env_report
step probe 60 gpu "${R[@]}" "$CHECK" probe

TOL=$OUT/tolerances.txt
"${R[@]}" "$CHECK" ops --list >"$WORK/ops.list" 2>&1
# shellcheck disable=SC2086,SC2046
step calibrate 120 torch $PY "$ROOT/bench/gpu_calibrate.py" --ops-list "$WORK/ops.list" --out "$TOL" --model "$BASE" \
    --image-npy "$DIST/chelsea.npy" $(for a in $ADAPTERS; do printf -- '--adapter %s ' "$a"; done) --grads
if [ -s "$TOL" ]; then export E2G_TOLERANCES=$TOL; else unset E2G_TOLERANCES; fi

for op in $(list_of ops "${R[@]}" "$CHECK" ops --list); do
    step "op/$op" 60 gpu "${R[@]}" CUDA_LAUNCH_BLOCKING=1 "$CHECK" ops "$op"
done
# shellcheck disable=SC2086
for part in $(list_of model "${R[@]}" "$CHECK" model "$BASE" "$IMAGE" $ADAPTERS --list); do
    step "model/$part" 90 gpu "${R[@]}" "$CHECK" model "$BASE" "$IMAGE" $ADAPTERS --only "$part"
done
step sticky-fault 60 gpu "${R[@]}" "$CHECK" sticky "$BASE"

NGF64=$WORK/ngf64.safetensors
step init-ngf64 60 cpu "${R[@]}" "$E2GAN" init --ngf 64 --concepts a,b --seed 1 --out "$NGF64"
for key in $(list_of bench "${R[@]}" "$CHECK" bench "$NGF64" --list); do
    step "bench/$key" 90 gpu "${R[@]}" "$CHECK" bench "$NGF64" --only "$key"
done
step torch-b1 120 torch $PY "$ROOT/bench/torch_bench.py" --model "$NGF64" --size 256 --batch 1 --device cuda --bf16 \
    --iters 50 --warmup 5
step torch-b32 120 torch $PY "$ROOT/bench/torch_bench.py" --model "$NGF64" --size 256 --batch 32 --device cuda --bf16 \
    --iters 20 --warmup 3

step train/grads-ngf16 120 gpu "${R[@]}" "$TCHECK" grads 16 32 2
step train/grads-ngf32 150 gpu "${R[@]}" "$TCHECK" grads 32 64 4
step train/grads-film-ngf16 120 gpu "${R[@]}" "$TCHECK" grads --film 16 32 2
step train/lora-step 90 gpu "${R[@]}" "$TCHECK" bench lora 64 256 16 8
step train/full-step 90 gpu "${R[@]}" "$TCHECK" bench full 32 128 32
step torch-train-lora 150 torch $PY "$ROOT/bench/torch_train_bench.py" --ngf 64 --size 256 --batch 16 --lora 8
step torch-train-full 150 torch $PY "$ROOT/bench/torch_train_bench.py" --ngf 32 --size 128 --batch 32

SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -1)
if [ -n "$SANITIZER" ] || [ $mode = dry ]; then
    # The smaller op checks (the large attention and conv ones cost minutes under memcheck).
    step memcheck-ops 150 gpu "${R[@]}" "${SANITIZER:-compute-sanitizer}" --tool memcheck --leak-check no \
        --error-exitcode 9 "$CHECK" ops conv7x7_reflect_16_32 upconv3x3_64_32 inorm_relu_residual layernorm_300x256 \
        bias_gelu_300x1024 attn_self_100_c128_h2 attn_cross_1024x8_c256_h4 output
else
    skip memcheck-ops "skipped" "compute-sanitizer not found"
fi

# ---- the results ---------------------------------------------------------------------------

card=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)
commit=$(cat "$DIST/commit" 2>/dev/null || echo unknown)
RES=$OUT/bench/results/gpu-$(date +%Y%m%d)-$commit.md
$PY - "$OUT" "$RES" "${card:-no GPU}" "$commit" "$mode" "$(elapsed)" <<'PYEOF'
import glob, json, os, re, sys
out, res, card, commit, mode, secs = sys.argv[1:7]
steps = [l.rstrip("\n").split("\t") for l in open(os.path.join(out, "steps.tsv")) if l.strip()]

def results(pattern):
    r = {}
    for path in glob.glob(os.path.join(out, "logs", pattern)):
        for line in open(path, errors="replace"):
            m = re.match(r"RESULT (\S+) (\S+)", line)
            if m:
                try:
                    r[m.group(1)] = float(m.group(2))
                except ValueError:
                    pass
    return r

def torch_json(name, key):
    for path in glob.glob(os.path.join(out, "logs", f"*-{name}.log")):
        for line in reversed(open(path, errors="replace").read().splitlines()):
            if line.startswith("{"):
                try:
                    return json.loads(line).get(key)
                except ValueError:
                    return None
    return None

b = results("*-bench_*.log")
t = results("*-train_*.log")
fmt = lambda v, s="%.3f": s % v if v is not None else "n/a"
goal = lambda v, lim: "n/a" if v is None else ("met" if v <= lim else "MISSED")
ratio = b["ms_b32_32_adapters"] / b["ms_b32_one_adapter_merged"] if "ms_b32_32_adapters" in b and "ms_b32_one_adapter_merged" in b else None
lora_ms = t.get("train.lora.ngf64.256.b16.ms_per_step")
perf = [
    ("ngf 64, 256², batch 1 (ms)", fmt(b.get("ms_b1")), fmt(torch_json("torch-b1", "ms_per_batch")), "≤ 0.40: " + goal(b.get("ms_b1"), 0.40)),
    ("ngf 64, 256², batch 32 (ms)", fmt(b.get("ms_b32")), fmt(torch_json("torch-b32", "ms_per_batch")), "≤ 9.8: " + goal(b.get("ms_b32"), 9.8)),
    ("batch 32, one adapter merged (ms)", fmt(b.get("ms_b32_one_adapter_merged")), "", ""),
    ("batch 32, one adapter unmerged (ms)", fmt(b.get("ms_b32_one_adapter_unmerged")), "", ""),
    ("batch 32 over 32 adapters (ms)", fmt(b.get("ms_b32_32_adapters")), "", "≤ 1.15× one merged: %s (%s×)" % (goal(ratio, 1.15), fmt(ratio, "%.2f"))),
    ("adapter switch, cold (µs)", fmt(b.get("us_switch_cold"), "%.1f"), "peft hot-swap 3800", "≤ 50: " + goal(b.get("us_switch_cold"), 50)),
    ("adapter switch, cached (µs)", fmt(b.get("us_switch_cached"), "%.1f"), "", ""),
    ("TFLOP/s batch 32 (peak %s)" % fmt(b.get("peak_tflops"), "%.0f"), fmt(b.get("tflops_b32"), "%.1f"), "", ""),
    ("train: LoRA r8 step, ngf 64, 256², b16 (ms)", fmt(lora_ms), fmt(torch_json("torch-train-lora", "ms_per_step")) + " (peft, G only)", "≤ 20: " + goal(lora_ms, 20)),
    ("train: full G, ngf 32, 128², b32 (samples/s)", fmt(t.get("train.full.ngf32.128.b32.samples_per_s"), "%.0f"), fmt(torch_json("torch-train-full", "samples_per_s"), "%.0f"), ""),
]
n_ok = sum(1 for s in steps if s[1] == "ok")
n_fail = sum(1 for s in steps if s[1].startswith(("FAIL", "TIMEOUT")))
n_skip = len(steps) - n_ok - n_fail
tol = os.path.join(out, "tolerances.txt")
lines = [
    "# GPU run" + (" (dry run: no GPU)" if mode == "dry" else ""), "",
    f"card: {card}  ", f"binaries: commit {commit}  ", f"bench/gpu-run.sh, {secs} s; {n_ok} ok, {n_fail} failed, {n_skip} skipped",
    "", "Tolerances: " + ("calibrated in this run (bench/gpu_calibrate.py, tolerances.txt)" if os.path.exists(tol) and os.path.getsize(tol) else "defaults (no calibration)"),
    "", "| step | status | key number |", "|---|---|---|",
] + [f"| {s[0]} | {s[1]} | {s[2] if len(s) > 2 else ''} |" for s in steps] + [
    "", "| measure | e2gan CUDA | PyTorch eager bf16, same run | goal |", "|---|---|---|---|",
] + ["| %s | %s | %s | %s |" % r for r in perf]
with open(res, "w") as f:
    f.write("\n".join(lines) + "\n")
# the table, last in the output: one line per step
w = max(len(s[0]) for s in steps)
print()
print(f"{'step':<{w}}  {'status':<16}  key number")
for s in steps:
    print(f"{s[0]:<{w}}  {s[1]:<16}  {s[2] if len(s) > 2 else ''}")
print(f"-- {n_ok} ok, {n_fail} failed, {n_skip} skipped in {secs} s; card {card}; binaries {commit}")
print("-- perf: " + "; ".join(f"{r[0].split(' (')[0]} {r[1]}" for r in perf[:2] + perf[4:6] + perf[8:9]))
print(f"-- written: {res} and {out}/logs/")
PYEOF
[ $? -eq 0 ] || failed=1

if [ $mode = dry ]; then
    # the dry run checks itself: every step recorded, none failed, the results file written
    n=$(wc -l <"$RESULTS")
    [ "$n" -eq $nstep ] || die "dry run: $nstep steps but $n results"
    [ -s "$RES" ] || die "dry run: no $RES"
    grep -q "^probe"$'\t'"skipped: no GPU" "$RESULTS" || die "dry run: the probe was not skipped as a GPU step"
    grep -q "^env"$'\t'"ok" "$RESULTS" || die "dry run: the environment step failed"
    ! grep -q $'\t'"FAIL" "$RESULTS" || die "dry run: a step failed"
fi
exit $failed
