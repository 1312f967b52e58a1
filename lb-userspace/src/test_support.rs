//! What the unit tests share: a scratch directory to write files into (removed on drop) and
//! rcgen CAs. Leaves stay with their tests, which each need a different one.

use std::path::PathBuf;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA with its key, able to sign.
pub(crate) type Ca = CertifiedIssuer<'static, KeyPair>;

/// A CA named `cn` (its only subject attribute): self-signed, or issued by `parent`.
pub(crate) fn ca(cn: &str, parent: Option<&Ca>) -> Ca {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().unwrap();
    match parent {
        Some(p) => CertifiedIssuer::signed_by(params, key, p).unwrap(),
        None => CertifiedIssuer::self_signed(params, key).unwrap(),
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
pub(crate) struct Scratch(tempfile::TempDir);

impl Scratch {
    pub(crate) fn new() -> Scratch {
        Scratch(
            tempfile::Builder::new()
                .prefix("sluice-unit-")
                .tempdir()
                .unwrap(),
        )
    }

    /// `name` in the directory (not created).
    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }

    /// Writes `contents` to `name` in the directory; its path.
    pub(crate) fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}
