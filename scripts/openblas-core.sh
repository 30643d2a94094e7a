#!/bin/sh
# Prints the OpenBLAS kernel family of this CPU's own tier, from /proc/cpuinfo's flags (the same
# rule as the engine's KernelSelection): Cooperlake (AVX-512 + BF16), SkylakeX (AVX-512),
# Haswell (AVX2 + FMA), Sandybridge (AVX), nothing otherwise. `make test` runs the in-process
# tests on it, so they use the kernels the daemon itself selects (an exported OPENBLAS_CORETYPE,
# or OpenBLAS 0.3.21's Prescott fallback on CPUs it does not know, would give other bits).
flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null | cut -d: -f2)
has() { for f in "$@"; do case " $flags " in *" $f "*) ;; *) return 1 ;; esac; done; }
if has avx512f avx512dq avx512cd avx512bw avx512vl avx512_bf16; then echo Cooperlake
elif has avx512f avx512dq avx512cd avx512bw avx512vl; then echo SkylakeX
elif has avx2 fma; then echo Haswell
elif has avx; then echo Sandybridge
fi
