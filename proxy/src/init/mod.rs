//! `attache-proxy init`: the pod's traffic through the sidecar. Run once (an init container with NET_ADMIN) in the
//! workload's network namespace, it installs NAT rules: inbound TCP to the app's ports goes to the inbound listener,
//! outbound TCP to the outbound listener, except the proxy's own traffic (by UID, so it never loops), loopback, and
//! configured skip ports and CIDRs. Idempotent: its chains are rewritten as a whole, the jumps to them added once.

mod rules;

use std::io::Write as _;
use std::process::{Command, Stdio};

use anyhow::{bail, Context as _};

pub use self::rules::{Family, Plan};

/// `attache-proxy init` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct InitArgs {
    /// The UID the proxy runs as: its own connections are never redirected.
    #[arg(long, env = "ATTACHE_PROXY_UID", default_value_t = 1337)]
    pub proxy_uid: u32,
    /// The inbound listener's port.
    #[arg(long, default_value_t = 4143)]
    pub inbound_port: u16,
    /// The outbound listener's port.
    #[arg(long, default_value_t = 4140)]
    pub outbound_port: u16,
    /// The app's ports to intercept inbound (comma-separated); none given: every port.
    #[arg(long, value_delimiter = ',')]
    pub inbound_ports: Vec<u16>,
    /// Inbound ports never intercepted (e.g. the proxy's admin port, probes served by the app itself).
    #[arg(long, env = "ATTACHE_SKIP_INBOUND_PORTS", value_delimiter = ',', default_value = "9901")]
    pub skip_inbound_ports: Vec<u16>,
    /// Outbound destination ports never intercepted.
    #[arg(long, env = "ATTACHE_SKIP_OUTBOUND_PORTS", value_delimiter = ',')]
    pub skip_outbound_ports: Vec<u16>,
    /// Outbound destination networks never intercepted (`10.0.0.0/8`, `fd00::/8`).
    #[arg(long, env = "ATTACHE_SKIP_OUTBOUND_CIDRS", value_delimiter = ',')]
    pub skip_outbound_cidrs: Vec<String>,
    /// Leave IPv6 alone (by default ip6tables gets the same rules when it is there).
    #[arg(long)]
    pub no_ipv6: bool,
    /// Print the rules and change nothing.
    #[arg(long)]
    pub dry_run: bool,
}

pub fn run(args: InitArgs) -> anyhow::Result<()> {
    let plan = Plan::try_from(&args)?;
    let mut families = vec![Family::V4];
    if !args.no_ipv6 && (args.dry_run || tool_exists("ip6tables-restore")) {
        families.push(Family::V6);
    }
    for family in families {
        let script = plan.restore_script(family);
        let jumps = rules::JUMPS;
        if args.dry_run {
            println!("# {} (dry run: nothing changed)\n{script}", family.restore());
            for (chain, target) in jumps {
                println!("{} -t nat -A {chain} -p tcp -j {target}   # unless present", family.tool());
            }
            continue;
        }
        restore(family, &script)?;
        let mut added = Vec::new();
        for (chain, target) in jumps {
            if ensure_jump(family, chain, target)? {
                added.push(format!("{chain} -> {target}"));
            }
        }
        println!("# {}: applied\n{script}", family.tool());
        match added.is_empty() {
            true => println!("# jumps already in place"),
            false => println!("# jumps added: {}", added.join(", ")),
        }
    }
    Ok(())
}

fn tool_exists(tool: &str) -> bool {
    Command::new(tool).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// `iptables-restore --noflush`: the chains the script declares are (re)created empty and filled atomically; the
/// rest of the table is left alone.
fn restore(family: Family, script: &str) -> anyhow::Result<()> {
    let mut child = Command::new(family.restore())
        .args(["--noflush", "-w", "5"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", family.restore()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(script.as_bytes()).with_context(|| format!("writing to {}", family.restore()))?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!("{} failed: {}", family.restore(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Adds `-j target` to `chain` unless it is there; whether it was added.
fn ensure_jump(family: Family, chain: &str, target: &str) -> anyhow::Result<bool> {
    let rule = ["-t", "nat", "-p", "tcp", "-j", target];
    let check = Command::new(family.tool()).args(["-w", "5", "-C", chain]).args(rule).stderr(Stdio::null()).status();
    if check.with_context(|| format!("running {}", family.tool()))?.success() {
        return Ok(false);
    }
    let out = Command::new(family.tool()).args(["-w", "5", "-A", chain]).args(rule).output()?;
    if !out.status.success() {
        bail!("{} -A {chain} failed: {}", family.tool(), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(true)
}
