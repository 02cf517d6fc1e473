//! `proxy-config secret`: the certificate a proxy says it holds and the root it trusts, in
//! istioctl's columns.

use crate::table;
use serde::Serialize;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use weft_api::types::timestamp::{rfc3339, Fraction};
use weft_security::cert::{chain_der, CertInfo};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretRow {
    resource_name: &'static str,
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

fn row(
    name: &'static str,
    kind: &'static str,
    pem: &str,
    now: SystemTime,
) -> anyhow::Result<SecretRow> {
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

/// `default` (the workload's chain, when the proxy holds one) and `ROOTCA`, as Istio names
/// them in Envoy's secrets.
pub fn secret_rows(chain: &str, root: &str, now: SystemTime) -> anyhow::Result<Vec<SecretRow>> {
    let mut rows = Vec::new();
    if !chain.is_empty() {
        rows.push(row("default", "Cert Chain", chain, now)?);
    }
    if !root.is_empty() {
        rows.push(row("ROOTCA", "CA", root, now)?);
    }
    Ok(rows)
}

pub fn secret_table(rows: &[SecretRow]) -> String {
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.resource_name.to_string(),
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
    fn a_held_chain_and_the_root_list_as_istioctl_lists_them() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "cluster.local").unwrap();
        let id = Identity::parse("spiffe://cluster.local/ns/default/sa/bookinfo-reviews").unwrap();
        let key = WorkloadKey::generate().unwrap();
        let chain = ca
            .sign(&key.csr(&id).unwrap(), &id, Duration::from_secs(3600))
            .unwrap();
        let rows = secret_rows(&chain[0], ca.root_pem(), SystemTime::now()).unwrap();
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
        assert!(!secret_rows(&chain[0], ca.root_pem(), later).unwrap()[0].valid_cert);
        assert!(
            secret_rows("", ca.root_pem(), SystemTime::now())
                .unwrap()
                .len()
                == 1
        );
    }
}
