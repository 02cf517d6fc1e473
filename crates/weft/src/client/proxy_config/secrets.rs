//! `proxy-config secret`: the certificate a proxy says it holds, the root it trusts and the
//! Secrets it was sent for `credentialName`s, in istioctl's columns.

use crate::table;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_api::types::timestamp::{rfc3339, Fraction};
use weft_api::types::Secret;
use weft_security::cert::{chain_der, CertInfo};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRow {
    resource_name: String,
    #[serde(rename = "type")]
    kind: &'static str,
    status: &'static str,
    valid_cert: bool,
    serial_number: String,
    not_after: String,
    not_before: String,
    /// The chain's SPIFFE IDs, for `-o json`.
    uri_sans: Vec<String>,
}

fn row(name: String, kind: &'static str, pem: &str, now: SystemTime) -> anyhow::Result<SecretRow> {
    let der = chain_der(pem)?;
    let info = CertInfo::of_der(&der[0])?;
    let at = |secs: i64| UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Ok(SecretRow {
        resource_name: name,
        kind,
        status: "ACTIVE",
        valid_cert: at(info.not_before) <= now && now < at(info.not_after),
        serial_number: info.serial_number,
        not_after: rfc3339(at(info.not_after), Fraction::None),
        not_before: rfc3339(at(info.not_before), Fraction::None),
        uri_sans: info.uri_sans,
    })
}

/// `default` (the workload's chain, when the proxy holds one), each Secret's as Istio's SDS
/// names them (`kubernetes://NAME`, its CA `kubernetes://NAME-cacert`), and `ROOTCA`. A
/// Secret that is not PEM is left out with a warning: the proxy refuses it too.
pub fn secret_rows(
    chain: &str,
    root: &str,
    secrets: &[(&str, &Secret)],
    now: SystemTime,
) -> anyhow::Result<Vec<SecretRow>> {
    let mut rows = Vec::new();
    if !chain.is_empty() {
        rows.push(row("default".into(), "Cert Chain", chain, now)?);
    }
    for (name, secret) in secrets {
        let parts = secret.tls_credential();
        let ca_name = match name.strip_suffix("-cacert") {
            Some(_) if parts.certificate.is_none() => name.to_string(),
            _ => format!("{name}-cacert"),
        };
        for (resource, kind, pem) in [
            (name.to_string(), "Cert Chain", parts.certificate),
            (ca_name, "CA", parts.ca),
        ] {
            let Some(pem) = pem else { continue };
            let resource = format!("kubernetes://{resource}");
            match std::str::from_utf8(pem)
                .map_err(anyhow::Error::from)
                .and_then(|pem| row(resource.clone(), kind, pem, now))
            {
                Ok(r) => rows.push(r),
                Err(e) => eprintln!("warning: {resource}: not a PEM certificate: {e}"),
            }
        }
    }
    if !root.is_empty() {
        rows.push(row("ROOTCA".into(), "CA", root, now)?);
    }
    Ok(rows)
}

pub fn secret_table(rows: &[SecretRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.resource_name.clone(),
                r.kind.to_string(),
                r.status.to_string(),
                r.valid_cert.to_string(),
                r.serial_number.clone(),
                r.not_after.clone(),
                r.not_before.clone(),
            ]
        })
        .collect();
    table::render(
        &[
            "RESOURCE NAME",
            "TYPE",
            "STATUS",
            "VALID CERT",
            "SERIAL NUMBER",
            "NOT AFTER",
            "NOT BEFORE",
        ],
        &body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_security::ca::Ca;
    use weft_security::workload::WorkloadKey;
    use weft_security::Identity;

    #[test]
    fn secrets_list_as_istios_sds_names_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        let (chain, _) = ca
            .serving(&["bookinfo.example.com"], Duration::from_secs(3600))
            .unwrap();
        let secret = |data: &[(&str, &str)]| Secret {
            data: data
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            ..Secret::default()
        };
        let both = secret(&[("tls.crt", &chain[0]), ("ca.crt", ca.root_pem())]);
        let ca_only = secret(&[("cacert", ca.root_pem())]);
        let broken = secret(&[("tls.crt", "not PEM")]);
        let rows = secret_rows(
            "",
            "",
            &[
                ("gw", &both),
                ("other-cacert", &ca_only),
                ("broken", &broken),
            ],
            SystemTime::now(),
        )
        .unwrap();
        let names: Vec<(&str, &str)> = rows
            .iter()
            .map(|r| (r.resource_name.as_str(), r.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("kubernetes://gw", "Cert Chain"),
                ("kubernetes://gw-cacert", "CA"),
                ("kubernetes://other-cacert", "CA")
            ]
        );
    }

    #[test]
    fn a_held_chain_and_the_root_list_as_istioctl_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let chain = ca
            .sign(&key.csr(&id).unwrap(), &id, Duration::from_secs(3600))
            .unwrap();
        let rows = secret_rows(&chain[0], ca.root_pem(), &[], SystemTime::now()).unwrap();
        let table = secret_table(&rows);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("RESOURCE NAME"), "{table}");
        let words = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(
            words(lines[1])[..5],
            ["default", "Cert", "Chain", "ACTIVE", "true"],
            "{table}"
        );
        assert_eq!(
            words(lines[2])[..4],
            ["ROOTCA", "CA", "ACTIVE", "true"],
            "{table}"
        );
        assert_eq!(rows[0].uri_sans, vec![id.to_string()]);
        assert!(rows[0].not_after.ends_with('Z'));
        // An hour and a minute later (the CA backdates a minute), the certificate is not valid.
        let later = SystemTime::now() + Duration::from_secs(3700);
        assert!(!secret_rows(&chain[0], ca.root_pem(), &[], later).unwrap()[0].valid_cert);
        assert!(
            secret_rows("", ca.root_pem(), &[], SystemTime::now())
                .unwrap()
                .len()
                == 1
        );
    }
}
