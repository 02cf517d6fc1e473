//! `weft describe service NAME`: the routes, subsets and policies that apply to a service.

use super::Target;

#[derive(clap::Args)]
pub struct DescribeArgs {
    /// Only `service` (or `svc`) for now.
    what: String,
    name: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
}

pub async fn run(_target: &Target, _args: DescribeArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
