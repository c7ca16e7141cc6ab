//! The few PTX instructions the libc needs: thread identity, the global
//! nanosecond timer, sleeping, address-space tests and `trap`.
//!
//! Off the GPU (host unit tests) each has a stand-in so the pure logic of the
//! other modules can be tested on x86_64; nothing here is a hostcall.

#[cfg(target_arch = "nvptx64")]
mod imp {
    use core::arch::asm;
    use core::arch::nvptx;

    /// Linear block id * threads per block + linear thread id.
    #[inline]
    pub fn global_thread_id() -> u64 {
        // SAFETY: reading special registers has no side effects and no
        // preconditions.
        unsafe {
            let (tx, ty, tz) = (nvptx::_thread_idx_x(), nvptx::_thread_idx_y(), nvptx::_thread_idx_z());
            let (bx, by, bz) = (nvptx::_block_dim_x(), nvptx::_block_dim_y(), nvptx::_block_dim_z());
            let (cx, cy, cz) = (nvptx::_block_idx_x(), nvptx::_block_idx_y(), nvptx::_block_idx_z());
            let (gx, gy) = (nvptx::_grid_dim_x(), nvptx::_grid_dim_y());
            let u = |v: u32| u64::from(v);
            let block = u(cx) + u(cy) * u(gx) + u(cz) * u(gx) * u(gy);
            let per_block = u(bx) * u(by) * u(bz);
            let thread = u(tx) + u(ty) * u(bx) + u(tz) * u(bx) * u(by);
            block * per_block + thread
        }
    }

    /// `%gridid`: differs between kernel launches, so per-thread state left by
    /// an earlier launch can be told apart from this one's.
    #[inline]
    pub fn launch_id() -> u64 {
        let id: u64;
        // SAFETY: reads a special register.
        unsafe { asm!("mov.u64 {}, %gridid;", out(reg64) id, options(nomem, nostack, preserves_flags)) };
        id
    }

    /// `%globaltimer`: nanoseconds, monotonic, shared by all SMs.
    #[inline]
    pub fn global_timer_ns() -> u64 {
        let t: u64;
        // SAFETY: reads a special register; `volatile` (no `pure`) keeps each
        // read where it is written.
        unsafe { asm!("mov.u64 {}, %globaltimer;", out(reg64) t, options(nomem, nostack, preserves_flags)) };
        t
    }

    /// Sleep for about `ns` nanoseconds (sm_70+; the hardware caps it at 1 ms).
    #[inline]
    pub fn nanosleep(ns: u32) {
        // SAFETY: `nanosleep` only suspends this thread.
        unsafe { asm!("nanosleep.u32 {};", in(reg32) ns, options(nomem, nostack, preserves_flags)) };
    }

    /// Whether `addr` is in the global state space: only global memory can be
    /// declared to the host as a device region (local memory, the stack, is
    /// private to the thread).
    #[inline]
    pub fn is_global(addr: *const u8) -> bool {
        let r: u32;
        // SAFETY: `isspacep` inspects the address only, it does not access it.
        unsafe {
            asm!(
                "{{ .reg .pred %p; isspacep.global %p, {a}; selp.u32 {r}, 1, 0, %p; }}",
                a = in(reg64) addr,
                r = out(reg32) r,
                options(nomem, nostack, preserves_flags),
            )
        };
        r != 0
    }

    /// Order this thread's memory accesses for other threads of the GPU
    /// (not for the host): `fence.acq_rel.gpu`, much cheaper than the
    /// `.sys` fence, which waits for outstanding writes to host memory.
    #[inline(always)]
    pub fn fence_gpu() {
        // SAFETY: a fence has no operands and no preconditions.
        unsafe { asm!("fence.acq_rel.gpu;", options(nostack, preserves_flags)) };
    }

    /// `%laneid`: this thread's lane in its warp.
    #[inline(always)]
    pub fn lane_id() -> u32 {
        let l: u32;
        // SAFETY: reads a special register.
        unsafe { asm!("mov.u32 {}, %laneid;", out(reg32) l, options(nomem, nostack, preserves_flags)) };
        l
    }

    /// The lanes of this warp executing here together (`activemask`).
    #[inline(always)]
    pub fn active_mask() -> u32 {
        let m: u32;
        // SAFETY: `activemask` only reads the warp's state.
        unsafe { asm!("activemask.b32 {};", out(reg32) m, options(nomem, nostack, preserves_flags)) };
        m
    }

    /// The lanes of `mask` whose `key` equals this lane's (`match.any`).
    /// Every lane of `mask` must execute it, this lane among them.
    #[inline(always)]
    pub fn match_any(mask: u32, key: u32) -> u32 {
        let m: u32;
        // SAFETY: a warp-synchronous instruction over `mask`, which the
        // caller guarantees; no memory access.
        unsafe { asm!("match.any.sync.b32 {}, {}, {};", out(reg32) m, in(reg32) key, in(reg32) mask, options(nomem, nostack, preserves_flags)) };
        m
    }

    /// `value` of lane `src` of `mask` (two `shfl.sync.idx`).
    #[inline(always)]
    pub fn shuffle(mask: u32, value: u64, src: u32) -> u64 {
        let (lo, hi): (u32, u32);
        // SAFETY: warp-synchronous over `mask` (the caller's guarantee, `src`
        // in it); no memory access.
        unsafe {
            asm!(
                "shfl.sync.idx.b32 {lo}, {a}, {src}, 31, {mask};",
                "shfl.sync.idx.b32 {hi}, {b}, {src}, 31, {mask};",
                lo = out(reg32) lo,
                hi = out(reg32) hi,
                a = in(reg32) value as u32,
                b = in(reg32) (value >> 32) as u32,
                src = in(reg32) src,
                mask = in(reg32) mask,
                options(nomem, nostack, preserves_flags),
            )
        };
        u64::from(lo) | u64::from(hi) << 32
    }

    /// The lanes of `mask` whose `pred` holds (`vote.sync.ballot`).
    #[inline(always)]
    pub fn ballot(mask: u32, pred: bool) -> u32 {
        let b: u32;
        // SAFETY: warp-synchronous over `mask`; no memory access.
        unsafe {
            asm!(
                "{{ .reg .pred %p; setp.ne.u32 %p, {v}, 0; vote.sync.ballot.b32 {b}, %p, {mask}; }}",
                v = in(reg32) u32::from(pred),
                b = out(reg32) b,
                mask = in(reg32) mask,
                options(nomem, nostack, preserves_flags),
            )
        };
        b
    }

    /// Wait for the lanes of `mask`; it orders their memory accesses too
    /// (`bar.warp.sync`).
    #[inline(always)]
    pub fn warp_sync(mask: u32) {
        // SAFETY: warp-synchronous over `mask`; a barrier, not an access.
        unsafe { asm!("bar.warp.sync {};", in(reg32) mask, options(nostack, preserves_flags)) };
    }

    /// A fence for the host: `fence.acq_rel.sys`.
    #[inline(always)]
    pub fn fence_sys() {
        // SAFETY: a fence has no operands and no preconditions.
        unsafe { asm!("fence.acq_rel.sys;", options(nostack, preserves_flags)) };
    }

    /// `fence.sc.sys`: this thread's stores to host memory go out now.
    #[inline(always)]
    pub fn fence_sc_sys() {
        // SAFETY: a fence has no operands and no preconditions.
        unsafe { asm!("fence.sc.sys;", options(nostack, preserves_flags)) };
    }

    /// Two relaxed system-scope 8-byte loads in one 16-byte access.
    ///
    /// # Safety
    /// `p` must be 16-byte aligned and point to two live words.
    #[inline(always)]
    pub unsafe fn load_pair(p: *const u64) -> [u64; 2] {
        let (a, b): (u64, u64);
        // SAFETY: the caller's guarantee.
        unsafe { asm!("ld.relaxed.sys.v2.u64 {{{}, {}}}, [{}];", out(reg64) a, out(reg64) b, in(reg64) p, options(nostack, preserves_flags, readonly)) };
        [a, b]
    }

    /// Two relaxed system-scope 8-byte stores in one 16-byte access.
    ///
    /// # Safety
    /// `p` must be 16-byte aligned and point to two live words.
    #[inline(always)]
    pub unsafe fn store_pair(p: *mut u64, v: [u64; 2]) {
        // SAFETY: the caller's guarantee.
        unsafe { asm!("st.relaxed.sys.v2.u64 [{}], {{{}, {}}};", in(reg64) p, in(reg64) v[0], in(reg64) v[1], options(nostack, preserves_flags)) };
    }

    /// A word that nothing writes while the kernel runs (the host wrote it
    /// before launch), loaded through the read-only cache: after a warp's
    /// first call, an L1 hit instead of a trip to L2.
    ///
    /// # Safety
    /// `p` must point to a live, aligned word in global memory that no one
    /// writes during the kernel.
    #[inline(always)]
    pub unsafe fn load_readonly(p: *const u64) -> u64 {
        let v: u64;
        // SAFETY: the caller's guarantee; `cvta.to.global` turns the generic
        // address of a global into the global address `ld.global` takes.
        unsafe {
            asm!(
                "{{ .reg .u64 %ga; cvta.to.global.u64 %ga, {p}; ld.global.nc.u64 {v}, [%ga]; }}",
                p = in(reg64) p,
                v = out(reg64) v,
                options(pure, readonly, nostack, preserves_flags)
            )
        };
        v
    }

    /// End this thread's kernel with an error (the host sees the launch fail
    /// after it has acknowledged `exit`/`abort`).
    #[inline]
    pub fn trap() -> ! {
        // SAFETY: `trap` ends the kernel; nothing runs after it.
        unsafe { asm!("trap;", options(noreturn, nostack)) }
    }
}

#[cfg(not(target_arch = "nvptx64"))]
mod imp {
    //! Host stand-ins, for unit tests of the pure logic only.

    pub fn global_thread_id() -> u64 {
        0
    }
    pub fn launch_id() -> u64 {
        1
    }
    /// A clock that moves 1 ms per reading, so time-bounded waits end.
    pub fn global_timer_ns() -> u64 {
        static NOW: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        NOW.fetch_add(1_000_000, core::sync::atomic::Ordering::Relaxed)
    }
    pub fn nanosleep(_ns: u32) {
        core::hint::spin_loop();
    }
    pub fn is_global(_addr: *const u8) -> bool {
        false
    }
    pub fn fence_gpu() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::AcqRel);
    }
    pub fn lane_id() -> u32 {
        0
    }
    pub fn active_mask() -> u32 {
        1
    }
    pub fn match_any(_mask: u32, _key: u32) -> u32 {
        1
    }
    pub fn shuffle(_mask: u32, value: u64, _src: u32) -> u64 {
        value
    }
    pub fn ballot(_mask: u32, pred: bool) -> u32 {
        u32::from(pred)
    }
    pub fn warp_sync(_mask: u32) {}
    pub fn fence_sys() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
    pub fn fence_sc_sys() {
        core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
    }
    pub fn trap() -> ! {
        loop {
            core::hint::spin_loop();
        }
    }
    /// # Safety
    /// `p` must point to a live, aligned word.
    pub unsafe fn load_readonly(p: *const u64) -> u64 {
        // SAFETY: the caller's guarantee.
        unsafe { core::ptr::read_volatile(p) }
    }
}

pub use imp::*;
