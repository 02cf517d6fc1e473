//! `weft iptables`: what Istio's init container (`istio-iptables`, in istio-init) writes
//! into a pod's network namespace, from the same flags, in REDIRECT mode. Inbound TCP goes
//! to the proxy's inbound port (15006) but for excluded ports; outbound TCP goes to its
//! outbound port (15001) but for the proxy's own user and group (1337), loopback, excluded
//! ports and excluded ranges. The rules are loaded with one `iptables-restore`, so a pod
//! never sees half of them.

use crate::sys::{find, SysError};
use std::io::Write;
use std::process::{Command, Stdio};

/// Istio's HBONE port, which capture always leaves alone.
const TUNNEL_PORT: u16 = 15008;
/// Where Envoy's inbound passthrough comes from (Istio's `InboundPassthroughClusterIpv4`).
const INBOUND_PASSTHROUGH_SOURCE: &str = "127.0.0.6/32";

/// The flags Istio's injection template writes with its defaults.
pub const INJECTED: [&str; 17] = [
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "REDIRECT",
    "-i",
    "*",
    "-x",
    "",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--log_output_level=default:info",
];

/// istio-iptables' flags, as the injector writes them.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct Capture {
    /// The proxy's outbound port.
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    pub outbound_port: u16,
    /// The proxy's inbound port.
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    pub inbound_port: u16,
    /// The proxy's user, whose connections go out as they are.
    #[arg(short = 'u', long = "proxy-uid", default_value = "1337")]
    pub proxy_uid: String,
    /// The proxy's group (default: the user's number).
    #[arg(short = 'g', long = "proxy-gid")]
    pub proxy_gid: Option<String>,
    /// REDIRECT (TPROXY is not implemented).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    pub mode: String,
    /// Outbound ranges to capture: `*` for all, or comma-separated CIDRs.
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "")]
    pub include_cidrs: String,
    /// Outbound ranges to leave alone.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    pub exclude_cidrs: String,
    /// Inbound ports to capture: `*` for all, or comma-separated ports.
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "")]
    pub inbound_ports: String,
    /// Inbound ports to leave alone when `-b` is `*`.
    #[arg(short = 'd', long = "istio-local-exclude-ports", default_value = "")]
    pub exclude_inbound_ports: String,
    /// Outbound ports to leave alone.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    pub exclude_outbound_ports: String,
    /// Print the rules instead of loading them.
    #[arg(long)]
    pub dry_run: bool,
    /// Istio's logging flags, accepted so the injector's arguments run unchanged.
    #[arg(long = "log_output_level", hide = true)]
    pub log_output_level: Option<String>,
    #[arg(long = "log_as_json", hide = true)]
    pub log_as_json: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("-m {0}: only REDIRECT is implemented (TPROXY keeps the caller's address, which needs transparent sockets in the proxy)")]
    Mode(String),
    #[error("{flag} {value:?}: {why}")]
    Flag {
        flag: &'static str,
        value: String,
        why: &'static str,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|v| !v.is_empty())
}

fn ports(flag: &'static str, value: &str) -> Result<Vec<u16>, CaptureError> {
    list(value)
        .map(|p| {
            p.parse().map_err(|_| CaptureError::Flag {
                flag,
                value: value.to_string(),
                why: "not a comma-separated list of ports",
            })
        })
        .collect()
}

fn cidrs(flag: &'static str, value: &str) -> Result<Vec<ipnet::Ipv4Net>, CaptureError> {
    list(value)
        .filter(|c| *c != "*")
        .map(|c| {
            c.parse::<ipnet::Ipv4Net>()
                .or_else(|_| c.parse::<std::net::Ipv4Addr>().map(ipnet::Ipv4Net::from))
                .map_err(|_| CaptureError::Flag {
                    flag,
                    value: value.to_string(),
                    why: "not `*` or a comma-separated list of IPv4 CIDRs",
                })
        })
        .collect()
}

impl Capture {
    /// The rules, in `iptables-save` form, in istio-iptables' order.
    pub fn rules(&self) -> Result<String, CaptureError> {
        if self.mode != "REDIRECT" {
            return Err(CaptureError::Mode(self.mode.clone()));
        }
        let gid = self
            .proxy_gid
            .clone()
            .unwrap_or_else(|| self.proxy_uid.clone());
        let (include, exclude) = (
            cidrs("-i", &self.include_cidrs)?,
            cidrs("-x", &self.exclude_cidrs)?,
        );
        let include_all = list(&self.include_cidrs).any(|c| c == "*");
        let inbound_all = list(&self.inbound_ports).any(|p| p == "*");
        let inbound = if inbound_all {
            Vec::new()
        } else {
            ports("-b", &self.inbound_ports)?
        };
        let exclude_inbound = ports("-d", &self.exclude_inbound_ports)?;
        let exclude_outbound = ports("-o", &self.exclude_outbound_ports)?;

        let mut r = vec![
            "* nat".to_string(),
            "-N ISTIO_INBOUND".into(),
            "-N ISTIO_REDIRECT".into(),
            "-N ISTIO_IN_REDIRECT".into(),
            "-N ISTIO_OUTPUT".into(),
            format!("-A ISTIO_INBOUND -p tcp --dport {TUNNEL_PORT} -j RETURN"),
            format!(
                "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.outbound_port
            ),
            format!(
                "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports {}",
                self.inbound_port
            ),
        ];
        if inbound_all || !inbound.is_empty() {
            r.push("-A PREROUTING -p tcp -j ISTIO_INBOUND".into());
            if inbound_all {
                for port in &exclude_inbound {
                    r.push(format!("-A ISTIO_INBOUND -p tcp --dport {port} -j RETURN"));
                }
                r.push("-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT".into());
            } else {
                for port in &inbound {
                    r.push(format!(
                        "-A ISTIO_INBOUND -p tcp --dport {port} -j ISTIO_IN_REDIRECT"
                    ));
                }
            }
        }
        r.push("-A OUTPUT -j ISTIO_OUTPUT".into());
        if !exclude_outbound.is_empty() {
            let ports: Vec<String> = exclude_outbound.iter().map(u16::to_string).collect();
            r.push(format!(
                "-A ISTIO_OUTPUT -p tcp -m multiport --dports {} -j RETURN",
                ports.join(",")
            ));
        }
        r.push(format!(
            "-A ISTIO_OUTPUT -o lo -s {INBOUND_PASSTHROUGH_SOURCE} -j RETURN"
        ));
        // The proxy calling its own pod's address over loopback is inbound traffic; anyone
        // else's loopback traffic, and all of the proxy's other traffic, goes as it is.
        for (kind, id) in [("uid", &self.proxy_uid), ("gid", &gid)] {
            r.push(format!("-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport {TUNNEL_PORT} -m owner --{kind}-owner {id} -j ISTIO_IN_REDIRECT"));
            r.push(format!(
                "-A ISTIO_OUTPUT -o lo -m owner ! --{kind}-owner {id} -j RETURN"
            ));
            r.push(format!(
                "-A ISTIO_OUTPUT -m owner --{kind}-owner {id} -j RETURN"
            ));
        }
        r.push("-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN".into());
        for cidr in &exclude {
            r.push(format!("-A ISTIO_OUTPUT -d {cidr} -j RETURN"));
        }
        if include_all {
            r.push("-A ISTIO_OUTPUT -j ISTIO_REDIRECT".into());
        } else {
            for cidr in &include {
                r.push(format!("-A ISTIO_OUTPUT -d {cidr} -j ISTIO_REDIRECT"));
            }
        }
        r.push("COMMIT".into());
        Ok(r.join("\n") + "\n")
    }

    /// Loads the rules into this network namespace, or prints them with `--dry-run`.
    pub fn apply(&self) -> Result<(), CaptureError> {
        let rules = self.rules()?;
        if self.dry_run {
            print!("{rules}");
            return Ok(());
        }
        let program = find("iptables-restore").unwrap_or_else(|| "iptables-restore".into());
        let failed = |stderr: String| SysError::Failed {
            command: "iptables-restore --noflush".into(),
            stderr,
        };
        let mut child = Command::new(&program)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| SysError::Missing {
                program: "iptables-restore".into(),
                package: "iptables",
                source,
            })?;
        child
            .stdin
            .take()
            .expect("piped")
            .write_all(rules.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
        let out = child
            .wait_with_output()
            .map_err(|e| failed(e.to_string()))?;
        if !out.status.success() {
            return Err(failed(String::from_utf8_lossy(&out.stderr).trim().to_string()).into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        capture: Capture,
    }

    fn parse(args: &[&str]) -> Capture {
        Cli::try_parse_from(std::iter::once("weft-iptables").chain(args.iter().copied()))
            .unwrap()
            .capture
    }

    #[test]
    fn the_injectors_flags_give_istio_inits_rules() {
        let rules = parse(&INJECTED).rules().unwrap();
        let expected = "* nat
-N ISTIO_INBOUND
-N ISTIO_REDIRECT
-N ISTIO_IN_REDIRECT
-N ISTIO_OUTPUT
-A ISTIO_INBOUND -p tcp --dport 15008 -j RETURN
-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001
-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006
-A PREROUTING -p tcp -j ISTIO_INBOUND
-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN
-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN
-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT
-A OUTPUT -j ISTIO_OUTPUT
-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -p tcp ! --dport 15008 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT
-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN
-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN
-A ISTIO_OUTPUT -j ISTIO_REDIRECT
COMMIT
";
        assert_eq!(rules, expected);
    }

    #[test]
    fn listed_ports_and_ranges_and_exclusions() {
        let rules = parse(&[
            "-b",
            "9080,9443",
            "-i",
            "10.0.0.0/8",
            "-x",
            "10.96.0.1,192.168.0.0/16",
            "-o",
            "22,443",
        ])
        .rules()
        .unwrap();
        for line in [
            "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_INBOUND -p tcp --dport 9443 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -p tcp -m multiport --dports 22,443 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.96.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -d 192.168.0.0/16 -j RETURN",
            "-A ISTIO_OUTPUT -d 10.0.0.0/8 -j ISTIO_REDIRECT",
        ] {
            assert!(rules.lines().any(|l| l == line), "no {line:?} in\n{rules}");
        }
        // Only the listed range is captured.
        assert!(
            !rules.contains("-A ISTIO_OUTPUT -j ISTIO_REDIRECT"),
            "{rules}"
        );
        // Nothing inbound is captured without -b.
        let outbound_only = parse(&["-i", "*"]).rules().unwrap();
        assert!(!outbound_only.contains("PREROUTING"), "{outbound_only}");
    }

    #[test]
    fn bad_flags_are_named() {
        let err = parse(&["-m", "TPROXY"]).rules().unwrap_err().to_string();
        assert!(err.contains("only REDIRECT"), "{err}");
        let err = parse(&["-b", "80,http"]).rules().unwrap_err().to_string();
        assert!(err.starts_with("-b \"80,http\""), "{err}");
        let err = parse(&["-i", "10.0.0.0/33"])
            .rules()
            .unwrap_err()
            .to_string();
        assert!(err.contains("IPv4 CIDRs"), "{err}");
    }
}
