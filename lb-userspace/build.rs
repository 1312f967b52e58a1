//! Builds the XDP programs (lb-ebpf) for the BPF target and leaves them in `OUT_DIR` for
//! `include_bytes_aligned!`. Set `AYA_BUILD_SKIP=1` to check or lint without bpf-linker.
//!
//! aya-build relays every line the nested cargo prints as a `cargo:warning`, so a fresh build
//! would show dozens of `warning: lb-userspace@0.1.0: Compiling ...` lines that read as
//! problems. The nested cargo runs quiet: only its errors and warnings come through. Set
//! `SLUICE_EBPF_BUILD_VERBOSE=1` to see its progress too.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=SLUICE_EBPF_BUILD_VERBOSE");
    if std::env::var_os("SLUICE_EBPF_BUILD_VERBOSE").is_none() {
        // Inherited by the nested cargo that aya-build starts; the build script is still
        // single-threaded here.
        std::env::set_var("CARGO_TERM_QUIET", "true");
    }
    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = meta
        .packages
        .iter()
        .find(|p| p.name.as_str() == "lb-ebpf")
        .ok_or_else(|| anyhow!("lb-ebpf package not found"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("lb-ebpf manifest has no parent"))?;
    if std::env::var_os("AYA_BUILD_SKIP").is_some() {
        // aya-build then builds nothing, but `include_bytes_aligned!` still needs files: empty
        // ones make `cargo check`, clippy and the fuzz targets work on a fresh target directory
        // (a daemon built this way fails to load its programs, saying the object is not ELF).
        let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").context("OUT_DIR")?);
        for name in ["sluice", "baseline"] {
            let path = out.join(name);
            if !path.exists() {
                std::fs::write(&path, []).with_context(|| format!("writing {}", path.display()))?;
            }
        }
    }
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom("stable"),
    )
}
