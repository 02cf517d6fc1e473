//! `weft up` as the platform tests drive it: a mesh file in a temporary state directory,
//! the CLI pointed at it, waiting for its pods.

use super::*;
use serde_json::Value;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub struct Up {
    pub weft: Weft,
    pub state: tempfile::TempDir,
    pub control: SocketAddr,
    wrapper: Vec<String>,
    args: Vec<String>,
}

/// Root runs `weft up` as nobody to exercise the rootless path; anyone else already is.
pub const AS_NOBODY: [&str; 6] = [
    "setpriv",
    "--reuid",
    "65534",
    "--regid",
    "65534",
    "--clear-groups",
];

impl Up {
    pub async fn start(mesh: &str) -> Up {
        Up::start_via(&[], mesh).await
    }

    pub async fn start_via(wrapper: &[&str], mesh: &str) -> Up {
        let state = tempfile::tempdir().unwrap();
        // Readable and writable by whoever the wrapper runs weft up as.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(state.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let file = state.path().join("mesh.yaml");
        std::fs::write(&file, mesh).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let [control, zipkin, dashboard] = free_addrs::<3>();
        let args = vec![
            "--control-plane".into(),
            control.to_string(),
            "up".into(),
            "-f".into(),
            file.display().to_string(),
            "--state-dir".into(),
            state.path().join("run").display().to_string(),
            "--zipkin-address".into(),
            zipkin.to_string(),
            "--dashboard-address".into(),
            dashboard.to_string(),
        ];
        Up {
            weft: Weft::spawn_via(wrapper, &args),
            state,
            control,
            wrapper: wrapper.iter().map(|w| w.to_string()).collect(),
            args,
        }
    }

    /// `weft up` again, on the same file and state directory.
    pub fn restart(&mut self) {
        self.restart_with(&[]);
    }

    /// `weft up` again with more flags (`--fresh`).
    pub fn restart_with(&mut self, extra: &[&str]) {
        let wrapper: Vec<&str> = self.wrapper.iter().map(String::as_str).collect();
        let mut args = self.args.clone();
        args.extend(extra.iter().map(|a| a.to_string()));
        self.weft = Weft::spawn_via(&wrapper, &args);
    }

    /// Waits until `weft up` has printed its summary (stderr), and returns it.
    pub async fn summary(&self) -> String {
        poll_until(Duration::from_secs(60), || {
            std::future::ready(up_summary(self.weft.stderr()))
        })
        .await
        .unwrap_or_else(|| panic!("weft up printed no summary\n{}", self.weft.output()))
    }

    pub fn state_dir(&self) -> String {
        self.state.path().join("run").display().to_string()
    }

    pub async fn weft(&self, args: &[&str]) -> (std::process::ExitStatus, String, String) {
        let mut all = vec!["--control-plane".to_string(), self.control.to_string()];
        all.extend(args.iter().map(|a| a.to_string()));
        if matches!(args[0], "status" | "logs" | "down") {
            all.extend(["--state-dir".to_string(), self.state_dir()]);
        }
        run_weft(&all).await
    }

    pub async fn status(&self) -> Option<Value> {
        let (status, out, _) = self.weft(&["status", "-o", "json"]).await;
        if !status.success() {
            return None;
        }
        serde_json::from_str(&out).ok()
    }
}

/// Waits until every pod of the mesh is ready; panics with the sandbox's log if not.
pub async fn all_ready(up: &Up, pods: usize) -> Value {
    let ready = poll_until(Duration::from_secs(60), || async {
        let s = up.status().await?;
        let list = s["pods"].as_array()?;
        (list.len() == pods && list.iter().all(|p| p["ready"] == true)).then_some(s)
    })
    .await;
    ready.unwrap_or_else(|| {
        let sandbox = std::fs::read_to_string(Path::new(&up.state_dir()).join("logs/sandbox.log"))
            .unwrap_or_default();
        panic!(
            "pods never became ready: {:?}\n{}\n--- sandbox.log ---\n{sandbox}",
            std::fs::read_to_string(Path::new(&up.state_dir()).join("status.json")),
            up.weft.output()
        )
    })
}
