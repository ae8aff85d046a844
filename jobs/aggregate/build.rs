//! Links `aggregate`'s binaries as fixed-address executables (`-no-pie`): a PIE of this size
//! carries ~74k relative relocations that the loader applies at every start, faulting in and
//! copying ~1.7 MB of `.data.rel.ro` (≈ 1 ms of a one-symbol run).
fn main() {
    println!("cargo:rustc-link-arg-bins=-no-pie");
}
