//! A throw-away PKI for TLS tests, generated with rcgen and written as PEM files that curl,
//! `openssl s_client` and sluice read directly.
//!
//! ```text
//! root CA ──► intermediate CA ──► server leaf        (server.crt = leaf + intermediate)
//!                     │      ├──► client leaf        (client.crt = leaf + intermediate)
//!                     │      └──► expired client     (expired.crt = leaf + intermediate)
//!                     └──► sub-intermediate ──► deep client (deep.crt = leaf + sub + intermediate)
//! other root CA ──► unknown-CA client                 (unknown.crt = leaf)
//! ```
//!
//! For curl: `--cacert pki.ca_cert()` to trust the server, `--cert id.chain() --key id.key()`
//! to present a client identity (curl sends the whole chain file). For `openssl s_client`:
//! `-CAfile pki.ca_cert() -cert id.leaf() -cert_chain id.intermediates_pem() -key id.key()`.
//! For sluice: `CertFiles { cert: id.chain(), key: id.key() }` and `client_ca = pki.ca_cert()`.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_rustls::rustls::pki_types::CertificateDer;

/// The subject common name of [`TestPki::client`]; it contains a comma on purpose (DN escaping).
pub const CLIENT_CN: &str = "Doe, Jane";
/// The subject organisation of [`TestPki::client`].
pub const CLIENT_O: &str = "Example, Inc.";
/// The DNS SAN of [`TestPki::client`].
pub const CLIENT_DNS: &str = "jane.clients.example.com";
/// The URI SAN of [`TestPki::client`].
pub const CLIENT_URI: &str = "spiffe://example.com/user/jane";

/// A certificate authority: its certificate and the key that signs with it.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
    cert: PathBuf,
}

impl Ca {
    /// The CA certificate as a PEM file.
    pub fn cert(&self) -> &Path {
        &self.cert
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        self.issuer.der()
    }
}

/// A leaf certificate with its key and the intermediates it presents, as files and DER.
#[derive(Debug, Clone)]
pub struct Identity {
    leaf: PathBuf,
    chain: PathBuf,
    intermediates_pem: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
    intermediates: Vec<CertificateDer<'static>>,
}

impl Identity {
    /// The leaf certificate alone (PEM).
    pub fn leaf(&self) -> &Path {
        &self.leaf
    }

    /// The leaf followed by its intermediates, in TLS order (PEM): what a server or client
    /// presents (curl `--cert`, sluice `CertFiles::cert`).
    pub fn chain(&self) -> &Path {
        &self.chain
    }

    /// Only the intermediates, in TLS order (PEM; an empty file when there are none, which
    /// `s_client` refuses: leave `-cert_chain` out then), for
    /// `openssl s_client -cert_chain`.
    pub fn intermediates_pem(&self) -> &Path {
        &self.intermediates_pem
    }

    /// The private key (PEM, PKCS#8).
    pub fn key(&self) -> &Path {
        &self.key
    }

    /// The leaf, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// The intermediates in the chain file, DER, in TLS order (leaf's issuer first).
    pub fn intermediates(&self) -> &[CertificateDer<'static>] {
        &self.intermediates
    }
}

/// Everything a TLS test needs; see the module documentation for the layout.
pub struct TestPki {
    dir: PathBuf,
    /// The root CA: the client CA bundle and the CA that clients trust for the server.
    pub root: Ca,
    /// Issued by the root; issues the server and client leaves.
    pub intermediate: Ca,
    /// Issued by the intermediate; issues [`TestPki::deep_client`] only.
    pub sub_intermediate: Ca,
    /// A CA that nothing here trusts.
    pub other_root: Ca,
    /// The server leaf for the names given to [`TestPki::generate`].
    pub server: Identity,
    /// A valid client: subject `CN=Doe, Jane, O=Example, Inc.`, SANs [`CLIENT_DNS`] and
    /// [`CLIENT_URI`], chain leaf + intermediate.
    pub client: Identity,
    /// A client whose certificate expired in 2001 (chain leaf + intermediate).
    pub expired_client: Identity,
    /// A client issued by [`TestPki::other_root`] (chain: the leaf alone).
    pub unknown_ca_client: Identity,
    /// A valid client two intermediates below the root (chain: leaf, sub-intermediate,
    /// intermediate): refused by `max_chain_depth = 1`, accepted by 2.
    pub deep_client: Identity,
}

impl TestPki {
    /// Generates the whole PKI and writes it into `dir` (created if missing). `server_names`
    /// become the server leaf's SANs (DNS names, or IP addresses when they parse as one).
    pub fn generate(dir: &Path, server_names: &[&str]) -> Result<TestPki> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let root = new_root(dir, "root", "sluice test root CA")?;
        let intermediate = new_sub_ca(dir, "intermediate", "sluice test intermediate CA", &root)?;
        let sub_intermediate = new_sub_ca(
            dir,
            "sub-intermediate",
            "sluice test sub-intermediate CA",
            &intermediate,
        )?;
        let other_root = new_root(dir, "other-root", "unknown test root CA")?;

        let mut pki = TestPki {
            dir: dir.to_path_buf(),
            server: Identity::placeholder(),
            client: Identity::placeholder(),
            expired_client: Identity::placeholder(),
            unknown_ca_client: Identity::placeholder(),
            deep_client: Identity::placeholder(),
            root,
            intermediate,
            sub_intermediate,
            other_root,
        };
        pki.server = pki.issue_server("server", server_names)?;

        let mut params = client_params(CLIENT_CN)?;
        params
            .distinguished_name
            .push(DnType::OrganizationName, CLIENT_O);
        params.subject_alt_names = vec![
            SanType::DnsName(CLIENT_DNS.try_into()?),
            SanType::URI(CLIENT_URI.try_into()?),
        ];
        pki.client = pki.issue("client", &params, &pki.intermediate, &[&pki.intermediate])?;

        let mut params = client_params("expired client")?;
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        pki.expired_client =
            pki.issue("expired", &params, &pki.intermediate, &[&pki.intermediate])?;

        let params = client_params("client of an unknown CA")?;
        pki.unknown_ca_client = pki.issue("unknown", &params, &pki.other_root, &[])?;

        let params = client_params("deep client")?;
        pki.deep_client = pki.issue(
            "deep",
            &params,
            &pki.sub_intermediate,
            &[&pki.sub_intermediate, &pki.intermediate],
        )?;
        Ok(pki)
    }

    /// The directory the files are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root CA certificate (PEM): curl `--cacert`, `s_client -CAfile`, sluice `client_ca`.
    pub fn ca_cert(&self) -> &Path {
        self.root.cert()
    }

    /// The server chain (leaf + intermediate, PEM).
    pub fn server_cert(&self) -> &Path {
        self.server.chain()
    }

    /// The server key (PEM).
    pub fn server_key(&self) -> &Path {
        self.server.key()
    }

    /// Issues another server leaf from the intermediate, written as `<stem>.crt` (leaf +
    /// intermediate), `<stem>-leaf.crt`, `<stem>-intermediates.crt` and `<stem>.key`.
    pub fn issue_server(&self, stem: &str, names: &[&str]) -> Result<Identity> {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())?;
        params.distinguished_name = dn(names.first().copied().unwrap_or("sluice test server"));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(stem, &params, &self.intermediate, &[&self.intermediate])
    }

    /// A CA issued by `parent`, written as `<stem>.crt`: for deeper chains than the standard
    /// ones.
    pub fn sub_ca(&self, stem: &str, cn: &str, parent: &Ca) -> Result<Ca> {
        new_sub_ca(&self.dir, stem, cn, parent)
    }

    /// Signs `params` with `signer` and writes the files; `presented` are the intermediates
    /// that go into the chain file after the leaf, in TLS order. [`client_params`] makes the
    /// parameters of a client leaf.
    pub fn issue(
        &self,
        stem: &str,
        params: &CertificateParams,
        signer: &Ca,
        presented: &[&Ca],
    ) -> Result<Identity> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &signer.issuer)?;
        let intermediates = presented.iter().map(|ca| ca.der().clone()).collect();
        let leaf_pem = cert.pem();
        let ints_pem: String = presented.iter().map(|ca| ca.issuer.pem()).collect();
        let id = Identity {
            leaf: write(&self.dir, &format!("{stem}-leaf.crt"), &leaf_pem)?,
            chain: write(&self.dir, &format!("{stem}.crt"), &(leaf_pem + &ints_pem))?,
            intermediates_pem: write(&self.dir, &format!("{stem}-intermediates.crt"), &ints_pem)?,
            key: write(&self.dir, &format!("{stem}.key"), &key.serialize_pem())?,
            der: cert.der().clone(),
            intermediates,
        };
        Ok(id)
    }
}

impl Identity {
    fn placeholder() -> Identity {
        Identity {
            leaf: PathBuf::new(),
            chain: PathBuf::new(),
            intermediates_pem: PathBuf::new(),
            key: PathBuf::new(),
            der: CertificateDer::from(Vec::new()),
            intermediates: Vec::new(),
        }
    }
}

fn dn(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn
}

fn ca_params(cn: &str) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "sluice tests");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params
}

/// A client leaf's parameters: subject `CN=<cn>`, digital signature, client authentication.
pub fn client_params(cn: &str) -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = dn(cn);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
}

fn new_root(dir: &Path, stem: &str, cn: &str) -> Result<Ca> {
    let issuer = CertifiedIssuer::self_signed(ca_params(cn), KeyPair::generate()?)?;
    let cert = write(dir, &format!("{stem}.crt"), &issuer.pem())?;
    Ok(Ca { issuer, cert })
}

fn new_sub_ca(dir: &Path, stem: &str, cn: &str, parent: &Ca) -> Result<Ca> {
    let issuer = CertifiedIssuer::signed_by(ca_params(cn), KeyPair::generate()?, &parent.issuer)?;
    let cert = write(dir, &format!("{stem}.crt"), &issuer.pem())?;
    Ok(Ca { issuer, cert })
}

fn write(dir: &Path, name: &str, contents: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    fs::write(&path, contents).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
