//! The NAT rules, as an `iptables-restore` script: pure, so `--dry-run` and the tests see exactly what is applied.

use std::fmt::Write as _;
use std::net::IpAddr;

use anyhow::bail;

use super::InitArgs;

pub const INBOUND_CHAIN: &str = "ATTACHE_INBOUND";
pub const OUTPUT_CHAIN: &str = "ATTACHE_OUTPUT";
/// Built-in chain -> our chain.
pub const JUMPS: [(&str, &str); 2] = [("PREROUTING", INBOUND_CHAIN), ("OUTPUT", OUTPUT_CHAIN)];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn tool(self) -> &'static str {
        match self {
            Self::V4 => "iptables",
            Self::V6 => "ip6tables",
        }
    }

    pub fn restore(self) -> &'static str {
        match self {
            Self::V4 => "iptables-restore",
            Self::V6 => "ip6tables-restore",
        }
    }

    fn loopback(self) -> &'static str {
        match self {
            Self::V4 => "127.0.0.0/8",
            Self::V6 => "::1/128",
        }
    }
}

/// What to intercept, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub proxy_uid: u32,
    pub inbound_port: u16,
    pub outbound_port: u16,
    pub inbound_ports: Vec<u16>,
    pub skip_inbound_ports: Vec<u16>,
    pub skip_outbound_ports: Vec<u16>,
    /// (network, prefix length), normalized text.
    pub skip_outbound_cidrs: Vec<(IpAddr, u8)>,
}

impl TryFrom<&InitArgs> for Plan {
    type Error = anyhow::Error;

    fn try_from(args: &InitArgs) -> anyhow::Result<Self> {
        let ports = [args.inbound_port, args.outbound_port];
        if ports.contains(&0) || args.inbound_port == args.outbound_port {
            bail!("--inbound-port and --outbound-port must be two different non-zero ports");
        }
        for (flag, list) in [
            ("--inbound-ports", &args.inbound_ports),
            ("--skip-inbound-ports", &args.skip_inbound_ports),
            ("--skip-outbound-ports", &args.skip_outbound_ports),
        ] {
            if list.contains(&0) {
                bail!("{flag}: port 0 is not a port");
            }
        }
        let skip_outbound_cidrs = args.skip_outbound_cidrs.iter().map(|c| cidr(c)).collect::<anyhow::Result<_>>()?;
        Ok(Self {
            proxy_uid: args.proxy_uid,
            inbound_port: args.inbound_port,
            outbound_port: args.outbound_port,
            inbound_ports: dedup(&args.inbound_ports),
            skip_inbound_ports: dedup(&args.skip_inbound_ports),
            skip_outbound_ports: dedup(&args.skip_outbound_ports),
            skip_outbound_cidrs,
        })
    }
}

fn dedup(ports: &[u16]) -> Vec<u16> {
    let mut out = ports.to_vec();
    out.sort_unstable();
    out.dedup();
    out
}

/// `10.0.0.0/8` -> (10.0.0.0, 8); an address alone is a host.
fn cidr(text: &str) -> anyhow::Result<(IpAddr, u8)> {
    let (ip, len) = match text.trim().split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (text.trim(), None),
    };
    let Ok(ip) = ip.parse::<IpAddr>() else { bail!("--skip-outbound-cidrs: `{text}` is not an IP network") };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(l) if l <= max => l,
            _ => bail!("--skip-outbound-cidrs: `{text}` has a prefix length outside 0-{max}"),
        },
    };
    Ok((ip, len))
}

impl Plan {
    /// The `nat` table script for one address family.
    pub fn restore_script(&self, family: Family) -> String {
        let mut s = String::from("*nat\n");
        let _ = writeln!(s, ":{INBOUND_CHAIN} - [0:0]\n:{OUTPUT_CHAIN} - [0:0]");
        // Inbound: skipped ports first, then the app's ports (or every port) to the inbound listener.
        for port in &self.skip_inbound_ports {
            let _ = writeln!(s, "-A {INBOUND_CHAIN} -p tcp --dport {port} -j RETURN");
        }
        let redirect_in = format!("-j REDIRECT --to-ports {}", self.inbound_port);
        if self.inbound_ports.is_empty() {
            let _ = writeln!(s, "-A {INBOUND_CHAIN} -p tcp {redirect_in}");
        }
        for port in &self.inbound_ports {
            let _ = writeln!(s, "-A {INBOUND_CHAIN} -p tcp --dport {port} {redirect_in}");
        }
        // Outbound: the proxy's own connections, loopback and skips leave untouched; the rest to the outbound listener.
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -m owner --uid-owner {} -j RETURN", self.proxy_uid);
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -o lo -j RETURN");
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -d {} -j RETURN", family.loopback());
        for port in &self.skip_outbound_ports {
            let _ = writeln!(s, "-A {OUTPUT_CHAIN} -p tcp --dport {port} -j RETURN");
        }
        for (ip, len) in self.skip_outbound_cidrs.iter().filter(|(ip, _)| ip.is_ipv4() == (family == Family::V4)) {
            let _ = writeln!(s, "-A {OUTPUT_CHAIN} -d {ip}/{len} -j RETURN");
        }
        let _ = writeln!(s, "-A {OUTPUT_CHAIN} -p tcp -j REDIRECT --to-ports {}", self.outbound_port);
        s.push_str("COMMIT\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> InitArgs {
        InitArgs {
            proxy_uid: 1337,
            inbound_port: 4143,
            outbound_port: 4140,
            inbound_ports: vec![8080],
            skip_inbound_ports: vec![9901],
            skip_outbound_ports: vec![5432],
            skip_outbound_cidrs: vec!["10.96.0.0/12".into(), "fd00::/8".into()],
            no_ipv6: false,
            dry_run: true,
        }
    }

    #[test]
    fn the_script_excludes_the_proxy_loopback_and_skips_before_redirecting() {
        let plan = Plan::try_from(&args()).unwrap_or_else(|e| panic!("{e:#}"));
        let v4 = plan.restore_script(Family::V4);
        let expected = "*nat
:ATTACHE_INBOUND - [0:0]
:ATTACHE_OUTPUT - [0:0]
-A ATTACHE_INBOUND -p tcp --dport 9901 -j RETURN
-A ATTACHE_INBOUND -p tcp --dport 8080 -j REDIRECT --to-ports 4143
-A ATTACHE_OUTPUT -m owner --uid-owner 1337 -j RETURN
-A ATTACHE_OUTPUT -o lo -j RETURN
-A ATTACHE_OUTPUT -d 127.0.0.0/8 -j RETURN
-A ATTACHE_OUTPUT -p tcp --dport 5432 -j RETURN
-A ATTACHE_OUTPUT -d 10.96.0.0/12 -j RETURN
-A ATTACHE_OUTPUT -p tcp -j REDIRECT --to-ports 4140
COMMIT
";
        assert_eq!(v4, expected);
        let v6 = plan.restore_script(Family::V6);
        assert!(v6.contains("-d ::1/128 -j RETURN") && v6.contains("-d fd00::/8 -j RETURN"));
        assert!(!v6.contains("10.96.0.0"), "IPv4 networks stay out of ip6tables");
    }

    #[test]
    fn without_app_ports_every_inbound_port_is_intercepted() {
        let plan = Plan::try_from(&InitArgs { inbound_ports: vec![], ..args() }).unwrap_or_else(|e| panic!("{e:#}"));
        assert!(plan.restore_script(Family::V4).contains("-A ATTACHE_INBOUND -p tcp -j REDIRECT --to-ports 4143\n"));
    }

    #[test]
    fn bad_arguments_are_refused_with_the_flag() {
        let err = |a: InitArgs| Plan::try_from(&a).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(InitArgs { outbound_port: 4143, ..args() }).contains("two different"));
        assert!(err(InitArgs { skip_outbound_cidrs: vec!["10.0.0.0/33".into()], ..args() }).contains("prefix length"));
        assert!(err(InitArgs { skip_outbound_cidrs: vec!["nope".into()], ..args() }).contains("not an IP network"));
        assert!(err(InitArgs { skip_outbound_ports: vec![0], ..args() }).contains("--skip-outbound-ports"));
    }
}
