//! The mesh a control-plane measurement serves: Kubernetes Services with WorkloadEntries as
//! their endpoints, spread over namespaces, each namespace scoped by a Sidecar as large Istio
//! meshes are, written as one multi-document YAML file per namespace.

use serde::Serialize;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct MeshSpec {
    pub services: usize,
    pub endpoints_per_service: usize,
    pub namespaces: usize,
    /// A Sidecar per namespace with egress `./*` and `istio-system/*`; without, every proxy
    /// sees every service and endpoint.
    pub sidecars: bool,
}

impl Default for MeshSpec {
    fn default() -> MeshSpec {
        MeshSpec {
            services: 5000,
            endpoints_per_service: 10,
            namespaces: 50,
            sidecars: true,
        }
    }
}

/// Generated addresses are 10.0.0.1 upwards; 10.255.0.0/16 is left for changes.
const MAX_ENDPOINTS: usize = 255 << 16;

impl MeshSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.services == 0 || self.endpoints_per_service == 0 || self.namespaces == 0 {
            return Err("services, endpoints per service and namespaces must be above 0".into());
        }
        if self.services * self.endpoints_per_service >= MAX_ENDPOINTS {
            return Err(format!(
                "at most {MAX_ENDPOINTS} endpoints fit the generated 10.0.0.0/8 addresses"
            ));
        }
        Ok(())
    }

    /// Every object the control plane holds: Services, WorkloadEntries and Sidecars.
    pub fn objects(&self) -> usize {
        self.services * (1 + self.endpoints_per_service)
            + if self.sidecars { self.namespaces } else { 0 }
    }

    pub fn namespace_of_service(&self, service: usize) -> usize {
        service % self.namespaces
    }

    /// Services `namespace + k · namespaces` live in `namespace`.
    pub fn services_in(&self, namespace: usize) -> usize {
        (namespace..self.services).step_by(self.namespaces).count()
    }

    /// What a proxy in one namespace holds: that namespace's Services, their endpoints and
    /// its Sidecar with scoping, everything without.
    pub fn resources_per_proxy(&self, namespace: usize) -> usize {
        if !self.sidecars {
            return self.objects();
        }
        self.services_in(namespace) * (1 + self.endpoints_per_service) + 1
    }
}

pub fn namespace(index: usize) -> String {
    format!("ns-{index}")
}

pub fn workload_entry_name(service: usize, endpoint: usize) -> String {
    format!("svc-{service}-{endpoint}")
}

/// The unique address generated for the `n`th endpoint.
pub fn endpoint_address(n: usize) -> String {
    let n = n + 1;
    format!("10.{}.{}.{}", n >> 16, (n >> 8) & 255, n & 255)
}

/// The address the `n`th change moves an endpoint to, unique across a run's changes.
pub fn changed_address(n: usize) -> String {
    format!("10.255.{}.{}", (n >> 8) & 255, n & 255)
}

fn service(spec: &MeshSpec, s: usize) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: svc-{s}, namespace: {ns}}}
spec:
  selector: {{app: svc-{s}}}
  ports: [{{name: http, port: 8080}}]
",
        ns = namespace(spec.namespace_of_service(s))
    )
}

/// One endpoint of service `s`: a pod of version v1 or v2.
pub fn workload_entry(spec: &MeshSpec, s: usize, e: usize, address: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: {name}, namespace: {ns}}}
spec:
  address: {address}
  labels: {{app: svc-{s}, version: v{v}}}
",
        name = workload_entry_name(s, e),
        ns = namespace(spec.namespace_of_service(s)),
        v = 1 + e % 2
    )
}

fn sidecar(ns: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {{name: default, namespace: {ns}}}
spec:
  egress:
  - hosts: [\"./*\", \"istio-system/*\"]
"
    )
}

/// A Service in istio-system: every proxy sees it, with or without Sidecars.
pub fn mesh_wide_service(name: &str) -> String {
    format!(
        "apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: istio-system}}
spec:
  selector: {{app: {name}}}
  ports: [{{name: http, port: 8080}}]
"
    )
}

/// The documents of one namespace's file.
fn namespace_file(spec: &MeshSpec, ns: usize) -> String {
    let mut text = String::new();
    if spec.sidecars {
        text.push_str(&sidecar(&namespace(ns)));
    }
    for s in (ns..spec.services).step_by(spec.namespaces) {
        let _ = write!(text, "---\n{}", service(spec, s));
        for e in 0..spec.endpoints_per_service {
            let address = endpoint_address(s * spec.endpoints_per_service + e);
            let _ = write!(text, "---\n{}", workload_entry(spec, s, e, &address));
        }
    }
    text
}

/// A generated config directory, removed when dropped.
pub struct GeneratedConfig {
    dir: PathBuf,
}

impl GeneratedConfig {
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for GeneratedConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Writes the mesh into a fresh directory under the system's temporary directory.
pub fn generate(spec: &MeshSpec) -> std::io::Result<GeneratedConfig> {
    let config = empty()?;
    for ns in 0..spec.namespaces {
        let file = config.dir.join(format!("{}.yaml", namespace(ns)));
        std::fs::write(file, namespace_file(spec, ns))?;
    }
    Ok(config)
}

/// A fresh, empty directory: the control plane's state when the mesh is elsewhere.
pub fn empty() -> std::io::Result<GeneratedConfig> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let dir = std::env::temp_dir().join(format!(
        "weft-bench-control-plane-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    Ok(GeneratedConfig { dir })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_mesh_loads_and_counts_as_planned() {
        let spec = MeshSpec {
            services: 7,
            endpoints_per_service: 3,
            namespaces: 2,
            sidecars: true,
        };
        let config = generate(&spec).unwrap();
        assert_eq!(documents(config.path()), spec.objects());
        // Each namespace's proxies hold its own objects, so together they hold everything.
        assert_eq!(
            spec.resources_per_proxy(0) + spec.resources_per_proxy(1),
            spec.objects()
        );
        assert_eq!(spec.resources_per_proxy(0), 4 * 4 + 1);
        assert_eq!(endpoint_address(0), "10.0.0.1");
        assert_eq!(endpoint_address(256), "10.0.1.1");
        assert_eq!(changed_address(257), "10.255.1.1");
        let path = config.path().to_path_buf();
        drop(config);
        assert!(!path.exists());
    }

    /// Documents in the generated files, counted by their `kind:` lines.
    fn documents(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|f| std::fs::read_to_string(f.unwrap().path()).unwrap())
            .map(|t| t.lines().filter(|l| l.starts_with("kind: ")).count())
            .sum()
    }
}
