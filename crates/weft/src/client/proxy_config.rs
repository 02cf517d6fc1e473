//! `weft proxy-config routes|clusters|endpoints|listeners PROXY`: what one proxy was sent,
//! compiled here exactly as the proxy compiles it, in istioctl's columns.

use super::Target;
use crate::table::Output;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Section {
    Routes,
    Clusters,
    Endpoints,
    Listeners,
}

#[derive(clap::Args)]
pub struct ProxyConfigArgs {
    #[arg(value_enum)]
    section: Section,
    /// `name` or `name.namespace`, as `weft proxy-status` lists it.
    proxy: String,
    #[arg(short = 'o', long, value_enum, default_value = "table")]
    output: Output,
}

pub async fn run(_target: &Target, _args: ProxyConfigArgs) -> anyhow::Result<()> {
    anyhow::bail!("not yet")
}
