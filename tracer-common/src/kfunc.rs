//! Marker ids for kernel functions (kfuncs) the programs call.
//!
//! aya 0.14 cannot resolve `.ksyms` kfunc externs, so a program that wants a kfunc emits an
//! ordinary helper call (`call IMM`) whose immediate is one of these markers instead. Before aya
//! parses the object, the loader (`tracer/src/kernel/kfunc.rs`) rewrites every such call: into a
//! kfunc call to the function's id in the running kernel's BTF when the kernel has it, otherwise
//! into `r0 = 0` (the program reaches that code only when configured to use the kfunc). The
//! values lie far above any helper id the kernel will define, so a marker left unrewritten is
//! rejected by the verifier as an unknown helper rather than calling the wrong one.

/// `bpf_cast_to_kern_ctx` (kernel >= 6.2): a program's context as the kernel's own struct (the
/// `sk_buff` behind a `__sk_buff`), so its fields can be read at their BTF offsets.
pub const KFUNC_MARK_CAST_TO_KERN_CTX: u32 = 0x7ffe_cafe;
