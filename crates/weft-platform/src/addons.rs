//! Addons that run beside the mesh, as Istio's `samples/addons` run beside istiod. Today:
//! Prometheus, started in the sandbox's network namespace with a scrape config that finds
//! every sidecar, gateway and the control plane, its API and UI forwarded to the host.

use crate::plan::Plan;
use crate::state::{write_atomic, StateDir};
use crate::PlatformError;
use serde_json::json;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Where Prometheus listens inside the sandbox (the host forwards its own 127.0.0.1:9090).
pub const PROMETHEUS_PORT: u16 = 9090;
pub const PROMETHEUS_SOCKET: &str = "prometheus.sock";
/// Istio's addon scrapes every 15 s.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
pub struct Prometheus {
    pub binary: PathBuf,
    pub scrape_interval: Duration,
}

impl Prometheus {
    /// Debian's `prometheus`, if installed.
    pub fn installed() -> Option<Prometheus> {
        crate::sys::find("prometheus").map(|binary| Prometheus {
            binary,
            scrape_interval: SCRAPE_INTERVAL,
        })
    }

    /// Writes the config and targets, then starts Prometheus (killed with the sandbox).
    pub fn start(
        &self,
        state: &StateDir,
        plan: &Plan,
        control_monitoring: SocketAddr,
    ) -> Result<Child, PlatformError> {
        let dir = state.root.join("prometheus");
        let io = |what| move |source| PlatformError::Io { what, source };
        std::fs::create_dir_all(dir.join("data")).map_err(io("creating prometheus/"))?;
        let targets = dir.join("targets.json");
        write_atomic(&targets, targets_json(plan, control_monitoring).as_bytes())
            .map_err(io("writing prometheus/targets.json"))?;
        let config = dir.join("prometheus.yml");
        write_atomic(
            &config,
            config_yaml(self.scrape_interval, &targets).as_bytes(),
        )
        .map_err(io("writing prometheus/prometheus.yml"))?;
        let log = std::fs::File::create(state.logs().join("prometheus.log"))
            .map_err(io("creating the prometheus log"))?;
        Command::new(&self.binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{PROMETHEUS_PORT}"))
            .arg("--storage.tsdb.retention.time=1d")
            .stdout(log.try_clone().map_err(io("opening a log"))?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| PlatformError::Io {
                what: "starting prometheus",
                source,
            })
    }
}

/// Istio's addon keeps pods that declare `prometheus.io/scrape` (the injector declares
/// 15020 `/stats/prometheus` for every sidecar) and labels their series with the pod's
/// labels, `namespace` and `pod`; here every pod with a sidecar is such a pod. The control
/// plane is labelled as istiod is (`app=istiod`, `istio=pilot`), which dashboards select.
fn targets_json(plan: &Plan, control: SocketAddr) -> String {
    let mut groups: Vec<serde_json::Value> = plan
        .pods
        .iter()
        .filter(|p| p.workload.spec.sidecar)
        .map(|p| {
            let mut labels: BTreeMap<String, String> = p
                .workload
                .spec
                .labels
                .iter()
                .map(|(k, v)| (prometheus_label(k), v.clone()))
                .collect();
            labels.insert("namespace".into(), p.namespace.clone());
            labels.insert("pod".into(), p.name.clone());
            labels.insert("__metrics_path__".into(), "/stats/prometheus".into());
            json!({"targets": [format!("{}:15020", p.ip)], "labels": labels})
        })
        .collect();
    groups.push(json!({
        "targets": [control.to_string()],
        "labels": {"namespace": "istio-system", "pod": "istiod", "app": "istiod", "istio": "pilot"},
    }));
    serde_json::to_string_pretty(&groups).expect("JSON values encode")
}

/// A Kubernetes label as Prometheus' `labelmap` names it (`service.istio.io/x` →
/// `service_istio_io_x`).
fn prometheus_label(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn config_yaml(interval: Duration, targets: &std::path::Path) -> String {
    let secs = interval.as_secs().max(1);
    format!(
        "# Written by weft up: every sidecar, gateway and the control plane.\n\
         global:\n  scrape_interval: {secs}s\n  evaluation_interval: {secs}s\n\
         scrape_configs:\n\
         - job_name: kubernetes-pods\n  honor_labels: true\n  file_sd_configs:\n  - files: [{:?}]\n    refresh_interval: {secs}s\n",
        targets.display().to_string()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_named_as_prometheus_labelmap_names_them() {
        assert_eq!(
            prometheus_label("service.istio.io/canonical-name"),
            "service_istio_io_canonical_name"
        );
        assert_eq!(prometheus_label("app"), "app");
    }
}
