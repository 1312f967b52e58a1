//! Builds the XDP programs (lb-ebpf) for the BPF target and leaves them in `OUT_DIR` for
//! `include_bytes_aligned!`. Set `AYA_BUILD_SKIP=1` to check or lint without bpf-linker.
use anyhow::{anyhow, Context as _};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
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
    aya_build::build_ebpf(
        [Package {
            name: "lb-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom("stable"),
    )
}
