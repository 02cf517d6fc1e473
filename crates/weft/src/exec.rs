//! `weft exec POD -- COMMAND`: a command inside a local pod, as `kubectl exec` runs one in
//! a container: the pod's network (so its sidecar captures the traffic), its `/etc/hosts`,
//! and the app's environment, `SSL_CERT_FILE` included.

use crate::platform::StateArgs;
use anyhow::Context;
use std::path::{Path, PathBuf};
use weft_platform::pod::PodSpec;

#[derive(clap::Args)]
pub struct ExecArgs {
    /// A pod (`sleep-0`), or a workload for its first pod.
    pod: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    state: StateArgs,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

pub fn run(args: ExecArgs) -> anyhow::Result<()> {
    let state = args.state.state();
    let status = crate::platform::read_status(&state)?;
    let pod = status
        .pods
        .iter()
        .filter(|p| p.namespace == args.namespace)
        .find(|p| p.name == args.pod)
        .or_else(|| {
            status
                .pods
                .iter()
                .find(|p| p.namespace == args.namespace && p.workload == args.pod)
        })
        .with_context(|| {
            format!(
                "no pod or workload {}/{} (weft status lists the pods)",
                args.namespace, args.pod
            )
        })?;
    let file = PodSpec::file(&state, &pod.namespace, &pod.name);
    let spec: PodSpec = serde_json::from_str(
        &std::fs::read_to_string(&file).with_context(|| format!("{}", file.display()))?,
    )
    .with_context(|| format!("{}", file.display()))?;
    let pid = pod_process(&file).with_context(|| {
        format!(
            "pod {}/{} has no running process (weft status shows whether it is up)",
            pod.namespace, pod.name
        )
    })?;
    let nsenter =
        weft_platform::sys::find("nsenter").context("cannot find nsenter: install util-linux")?;
    let mut command = std::process::Command::new(nsenter);
    command.args(["--target", &pid.to_string(), "--net", "--mount"]);
    // Rootless, the pod's namespaces belong to the sandbox's user namespace: enter it first,
    // keeping this user's credentials (which map to its root).
    let user_ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    if user_ns(&pid.to_string()) != user_ns("self") {
        command.args(["--user", "--preserve-credentials"]);
    }
    command
        .arg("--")
        .args(&args.command)
        .env("HOSTNAME", &spec.name)
        .env("POD_NAME", &spec.name)
        .env("POD_NAMESPACE", &spec.namespace)
        .env("INSTANCE_IP", spec.ip.to_string())
        .env("SERVICE_ACCOUNT", &spec.service_account)
        .env(
            "SSL_CERT_FILE",
            weft_platform::public_ca::bundle_file(&state),
        )
        .envs(&spec.env);
    let status = command
        .status()
        .with_context(|| format!("running {:?} in pod {}", args.command, pod.name))?;
    std::process::exit(status.code().unwrap_or(128));
}

/// The pod's first process (`weft platform pod --spec FILE`), whose namespaces are the pod's.
fn pod_process(spec_file: &Path) -> Option<u32> {
    let spec_file = spec_file.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc").ok()?.find_map(|entry| {
        let entry = entry.ok()?;
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline =
            std::fs::read(PathBuf::from("/proc").join(pid.to_string()).join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_pod = args.windows(4).any(|w| {
            w[0] == b"platform" && w[1] == b"pod" && w[2] == b"--spec" && w[3] == spec_file
        });
        is_pod.then_some(pid)
    })
}
