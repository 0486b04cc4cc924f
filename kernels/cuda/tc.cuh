// Tensor-core and asynchronous-copy primitives the attention kernels share (inline PTX):
// cp.async into shared memory, ldmatrix, mma.sync m16n8k16 (bf16 in, f32 accumulate) and
// Hopper's warpgroup MMA (wgmma, sm_90a only).
#pragma once

#include <cuda_bf16.h>
#include <cstdint>

__device__ __forceinline__ uint32_t smem_u32(const void *p)
{
    return (uint32_t)__cvta_generic_to_shared(p);
}

// 16 bytes global -> shared, L2 only; ok false zero-fills without reading src
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, bool ok)
{
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(ok ? 16 : 0)
                 : "memory");
}

__device__ __forceinline__ void cp_async_commit()
{
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}

template <int N> __device__ __forceinline__ void cp_async_wait()
{
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t *r, uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ void ldsm_x4_trans(uint32_t *r, uint32_t addr)
{
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

// c (16x8 f32) += a (16x16 bf16, row) * b (16x8 bf16, col)
__device__ __forceinline__ void mma_bf16(float *c, const uint32_t *a, uint32_t b0, uint32_t b1)
{
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v)
{
    return *reinterpret_cast<uint32_t *>(&v);
}

// Hopper warpgroup MMA (sm_90a only: elsewhere these compile to nothing or a trap, and
// the kernels using them are not launched).
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define KW_WGMMA 1
#endif
// the 64 accumulator operands of an m64n128 wgmma
#define KW_D64 \
    "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
    "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
    "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
    "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"

#define KW_ACC4(i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define KW_ACC64                                                                           \
    KW_ACC4(0), KW_ACC4(1), KW_ACC4(2), KW_ACC4(3), KW_ACC4(4), KW_ACC4(5), KW_ACC4(6),    \
        KW_ACC4(7), KW_ACC4(8), KW_ACC4(9), KW_ACC4(10), KW_ACC4(11), KW_ACC4(12),         \
        KW_ACC4(13), KW_ACC4(14), KW_ACC4(15)

// Shared-memory matrix descriptor of a tile in the 128-byte swizzle: start address, the
// byte offsets between 64-element column blocks (lbo: MN-major only) and between groups
// of 8 rows (sbo), swizzle mode 1. Addresses and offsets are in 16-byte units.
__device__ __forceinline__ uint64_t wg_desc(uint32_t addr, uint32_t lbo, uint32_t sbo)
{
    return (uint64_t)((addr & 0x3ffff) >> 4) | (uint64_t)(lbo >> 4) << 16 |
           (uint64_t)(sbo >> 4) << 32 | 1ull << 62;
}

__device__ __forceinline__ void wg_fence()
{
#ifdef KW_WGMMA
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}

// Generic-proxy shared-memory writes (st.shared, cp.async) made visible to wgmma
__device__ __forceinline__ void fence_async_smem()
{
#ifdef KW_WGMMA
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}

// d (64 x 128 f32 per warpgroup) = [d +] A B; A (64 x 16) and B (16 x 128) K-major in
// shared memory. acc = 0 overwrites d.
__device__ __forceinline__ void wgmma_ss(float (*d)[4], uint64_t da, uint64_t db, int acc)
{
#ifdef KW_WGMMA
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{" KW_D64 "}, %64, %65, p, 1, 1, 0, 0;\n}\n"
        : KW_ACC64
        : "l"(da), "l"(db), "r"(acc));
#else
    __trap();
#endif
}

template <int N> __device__ __forceinline__ void wg_wait()
{
#ifdef KW_WGMMA
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}

__device__ __forceinline__ void wg_commit()
{
#ifdef KW_WGMMA
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}

// d += A B; A (64 x 16 bf16) in registers (the mma.sync m16n8k16 A fragment per warp),
// B (16 x 128) MN-major in shared memory.
__device__ __forceinline__ void wgmma_rs(float (*d)[4], const uint32_t *a, uint64_t db)
{
#ifdef KW_WGMMA
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
                 "{" KW_D64 "}, {%64, %65, %66, %67}, %68, p, 1, 1, 1;\n}\n"
        : KW_ACC64
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db), "r"(1));
#else
    __trap();
#endif
}

// Shared-memory barriers (mbarrier objects, sm_80+; try_wait sm_90) and named block
// barriers, for blocks whose warps take different roles.
__device__ __forceinline__ void mbar_init(uint32_t bar, int count)
{
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}

// arrive (release: this thread's earlier writes are seen by a thread that waits)
__device__ __forceinline__ void mbar_arrive(uint32_t bar)
{
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.shared::cta.b64 st, [%0];\n}\n" ::"r"(bar)
                 : "memory");
}

// an arrival, counted among the expected ones, once every cp.async this thread has issued
// so far has landed
__device__ __forceinline__ void cp_async_arrive(uint32_t bar)
{
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}

// an arrival that also expects tx more bytes of asynchronous copies (TMA) on this phase
__device__ __forceinline__ void mbar_arrive_tx(uint32_t bar, uint32_t tx)
{
#ifdef KW_WGMMA
    asm volatile("{\n.reg .b64 st;\nmbarrier.arrive.expect_tx.shared::cta.b64 st, [%0], %1;\n}\n"
                 ::"r"(bar), "r"(tx)
                 : "memory");
#else
    __trap();
#endif
}

// A TMA copy of the box at coordinates (c0, c1, c2) of a 3-D tensor map (a kernel
// parameter, __grid_constant__) into shared memory at dst; its bytes complete on bar
__device__ __forceinline__ void tma_load_3d(uint32_t dst, const void *map, int c0, int c1,
                                            int c2, uint32_t bar)
{
#ifdef KW_WGMMA
    asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.tile.mbarrier::complete_tx::"
                 "bytes [%0], [%1, {%2, %3, %4}], [%5];\n" ::"r"(dst),
                 "l"((uint64_t)map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
                 : "memory");
#else
    __trap();
#endif
}

// waits until the phase of the given parity has completed (acquire)
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    uint32_t done;
    do
        asm volatile("{\n.reg .pred p;\n"
                     "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
                     "selp.u32 %0, 1, 0, p;\n}\n"
                     : "=r"(done)
                     : "r"(bar), "r"(parity)
                     : "memory");
    while (!done);
#else
    __trap();
#endif
}

// named barrier id among n threads (a multiple of 32): all wait, or arrive and go on
__device__ __forceinline__ void bar_sync(int id, int n)
{
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

__device__ __forceinline__ void bar_arrive(int id, int n)
{
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

// A warpgroup's register budget per thread, raised or lowered (sm_90a; N a multiple of 8)
template <int N> __device__ __forceinline__ void regs_raise()
{
#ifdef KW_WGMMA
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}

template <int N> __device__ __forceinline__ void regs_lower()
{
#ifdef KW_WGMMA
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(N));
#endif
}
