//! `sluice check`'s view of a listener's TLS settings: every file `server_config` would read,
//! each read on its own so one bad file does not hide the next, with the setting that names
//! it.

use super::{files, server_config, TlsError, TlsSettings};

/// Every problem `server_config(settings)` would hit, each with the setting at fault relative
/// to the listener's `tls` table (`certificates[1].key`, `client_ca`, or empty for the table as
/// a whole). Empty when `run` would build this configuration.
pub fn check_files(settings: &TlsSettings) -> Vec<(String, TlsError)> {
    let mut problems = Vec::new();
    for (i, c) in settings.certificates.iter().enumerate() {
        if let Err(error) = files::certified_key(&c.cert, &c.key) {
            // The key is at fault when the error names it (unreadable, unusable, mismatched).
            let which = match &error {
                TlsError::Read { path, .. }
                | TlsError::NotPem { path, .. }
                | TlsError::NoKey { path }
                | TlsError::BadKey { path, .. }
                    if *path == c.key =>
                {
                    "key"
                }
                TlsError::KeyMismatch { .. } => "key",
                _ => "cert",
            };
            problems.push((format!("certificates[{i}].{which}"), error));
            // A bad certificate stops `certified_key` before it reads the key: read the key
            // anyway, so a missing one is not found only by the next run.
            if which == "cert" {
                if let Err(error) = std::fs::read(&c.key) {
                    let path = c.key.clone();
                    problems.push((
                        format!("certificates[{i}].key"),
                        TlsError::Read { path, error },
                    ));
                }
            }
        }
    }
    if let Some(ca) = &settings.client_ca {
        if let Err(error) = files::ca_bundle(ca) {
            problems.push(("client_ca".to_owned(), error));
        }
    }
    if problems.is_empty() {
        // Whatever is left is about the settings together (client_auth without a CA, a CA
        // bundle the verifier refuses).
        if let Err(error) = server_config(settings) {
            problems.push((String::new(), error));
        }
    }
    problems
}
