//! `security.istio.io` kinds: PeerAuthentication.

use super::common::{one_of, port, workload_selector, Path, Report};
use crate::types::{MtlsMode, PeerAuthentication, PeerMtls};

pub fn validate_peer_authentication(r: &mut Report, pa: &PeerAuthentication) {
    let spec = Path::spec();
    if let Some(selector) = &pa.selector {
        workload_selector(
            r,
            &spec.field("selector").field("matchLabels"),
            &selector.match_labels,
        );
    }
    if let Some(mtls) = &pa.mtls {
        mode(r, &spec.field("mtls"), mtls);
    }
    let Some(ports) = &pa.port_level_mtls else {
        return;
    };
    let at = spec.field("portLevelMtls");
    if ports.is_empty() {
        r.error(
            &at,
            "spec.portLevelMtls in body should have at least 1 properties",
        );
    }
    if pa.selector_labels().is_none() {
        r.error(&at, "portLevelMtls requires selector")
            .with_hint("port-level settings apply to a workload's ports: select the workload with selector.matchLabels");
    }
    for (key, mtls) in ports {
        let path = at.key(key);
        match key.parse::<u32>() {
            Ok(number) => port(r, &path, number),
            Err(_) => {
                r.error(
                    &path,
                    format!("type conversion error from {key:?} to a port number"),
                );
            }
        }
        mode(r, &path, mtls);
    }
}

fn mode(r: &mut Report, path: &Path, mtls: &PeerMtls) {
    if let Some(mode) = &mtls.mode {
        one_of(r, &path.field("mode"), mode, &MtlsMode::NAMES);
    }
}
