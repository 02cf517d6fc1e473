//! `weft manifest generate` and `weft install`: what a cluster needs to run Weft, as
//! istioctl prints and installs it, and the Helm chart of the same objects.

use anyhow::Context;
use std::path::PathBuf;

#[derive(clap::Subcommand)]
pub enum ManifestCommand {
    /// Print every object a cluster needs, as istioctl manifest generate does: Istio's
    /// CRDs, the istio-system Namespace, istiod's RBAC, Deployment and Service, the
    /// injection webhook's configuration, and the Prometheus and dashboard addons.
    Generate(GenerateArgs),
    /// Write the same objects as a Helm chart (what charts/weft holds).
    #[command(hide = true)]
    Chart {
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The image whose entrypoint is weft, for istiod and the injected sidecars.
    #[arg(long)]
    image: Option<String>,
    /// A plugged-in CA (Istio's cacerts layout, also given to the cluster as the cacerts
    /// Secret): its root-cert.pem becomes the webhook's caBundle.
    #[arg(long, value_name = "DIR")]
    ca_dir: Option<PathBuf>,
    /// Leave out the Prometheus addon and the dashboard's Service.
    #[arg(long)]
    without_addons: bool,
    /// Also serve Istio's plaintext grpc-xds port, 15010 (weft control --grpc): discovery
    /// without mTLS and the admin API behind the admin token. Off by default; for tests.
    #[arg(long)]
    plaintext_xds: bool,
}

#[derive(clap::Args)]
pub struct InstallArgs {
    #[command(flatten)]
    manifest: GenerateArgs,
    /// The cluster (default: $KUBECONFIG or ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// How long to wait for the Deployments to be available, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    timeout: u64,
}

/// `weft install`: the manifest server-side applied, then the wait for its Deployments.
pub fn install(args: InstallArgs) -> anyhow::Result<()> {
    let objects = weft_kube::manifest::generate(&options(&args.manifest)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = weft_kube::cluster::client(args.kubeconfig.as_deref()).await?;
        let within = std::time::Duration::from_secs(args.timeout);
        let total = objects.len();
        let mut applied = 0;
        weft_kube::install::install(&client, &objects, within, |p| match p {
            weft_kube::install::Progress::Applied(what) => {
                applied += 1;
                eprintln!("[{applied}/{total}] {what} serverside-applied");
            }
            weft_kube::install::Progress::Waiting {
                what,
                ready,
                wanted,
            } => {
                eprintln!("waiting for {what}: {ready}/{wanted} available");
            }
            weft_kube::install::Progress::Ready(what) => eprintln!("{what} is available"),
        })
        .await?;
        eprintln!("Weft is installed: label a namespace istio-injection=enabled for sidecars");
        Ok(())
    })
}

fn options(args: &GenerateArgs) -> anyhow::Result<weft_kube::manifest::Options> {
    let defaults = weft_kube::manifest::Options::default();
    let ca_bundle = match &args.ca_dir {
        Some(dir) => {
            let root = dir.join("root-cert.pem");
            Some(
                std::fs::read_to_string(&root)
                    .with_context(|| format!("--ca-dir: cannot read {}", root.display()))?,
            )
        }
        None => None,
    };
    Ok(weft_kube::manifest::Options {
        image: args.image.clone().unwrap_or(defaults.image),
        ca_bundle,
        addons: !args.without_addons,
        plaintext_xds: args.plaintext_xds,
    })
}

pub fn manifest(command: ManifestCommand) -> anyhow::Result<()> {
    let args = match command {
        ManifestCommand::Generate(args) => args,
        ManifestCommand::Chart { out } => return write_chart(&out),
    };
    let opts = options(&args)?;
    print!(
        "{}",
        weft_kube::manifest::to_yaml(&weft_kube::manifest::generate(&opts))
    );
    Ok(())
}

fn write_chart(out: &std::path::Path) -> anyhow::Result<()> {
    for (path, content) in weft_kube::manifest::helm_chart() {
        let file = out.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(&file, content).with_context(|| format!("writing {}", file.display()))?;
    }
    Ok(())
}
