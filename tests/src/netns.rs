//! Network namespaces a test makes for itself (`ip netns`, a veth pair to the test's own namespace), removed when
//! the handle drops, also when the test fails. Needs root and iproute2.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{bail, Context as _};

/// A namespace joined to the test's namespace by a veth pair on a /30: `host_ip` here, `ns_ip` inside.
pub struct Netns {
    pub name: String,
    pub host_ip: Ipv4Addr,
    pub ns_ip: Ipv4Addr,
    host_if: String,
}

/// Whether this process may make namespaces (root with `ip` present).
pub fn available() -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    root && Command::new("ip").arg("-V").output().is_ok_and(|o| o.status.success())
}

fn run(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output().with_context(|| format!("running {args:?}"))?;
    if !out.status.success() {
        bail!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

impl Netns {
    /// `tag` keeps parallel tests apart (it picks the /30 too): 0-63.
    pub fn create(tag: u8) -> anyhow::Result<Self> {
        let pid = std::process::id();
        let name = format!("attache-{pid}-{tag}");
        let (host_if, ns_if) = (format!("av{}h{tag}", pid % 100_000), format!("av{}n{tag}", pid % 100_000));
        // 10.213.<pid % 250>.<4 * tag + 1..2>/30.
        let third = u8::try_from(pid % 250).unwrap_or(0);
        let base = tag.saturating_mul(4);
        let (host_ip, ns_ip) = (Ipv4Addr::new(10, 213, third, base + 1), Ipv4Addr::new(10, 213, third, base + 2));
        let ns = Self { name: name.clone(), host_ip, ns_ip, host_if: host_if.clone() };
        run(&["ip", "netns", "add", &name])?;
        run(&["ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if])?;
        run(&["ip", "link", "set", &ns_if, "netns", &name])?;
        run(&["ip", "addr", "add", &format!("{host_ip}/30"), "dev", &host_if])?;
        run(&["ip", "link", "set", &host_if, "up"])?;
        ns.exec_ok(&["ip", "addr", "add", &format!("{ns_ip}/30"), "dev", &ns_if])?;
        ns.exec_ok(&["ip", "link", "set", &ns_if, "up"])?;
        ns.exec_ok(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// A command run inside the namespace.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut c = tokio::process::Command::new("ip");
        c.args(["netns", "exec", &self.name, program]).kill_on_drop(true);
        c
    }

    /// Runs `args` inside the namespace, failing with its stderr.
    pub fn exec_ok(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .with_context(|| format!("running {args:?} in {}", self.name))?;
        if !out.status.success() {
            bail!("{args:?} in {} failed: {}", self.name, String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it ours; ours is removed too in case the
        // namespace never got it.
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
    }
}
