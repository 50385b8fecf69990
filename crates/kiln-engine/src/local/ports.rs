//! Ports for tasks and for each job's PyTorch rendezvous. kiln remembers
//! what it handed out, so two running jobs never get the same port, and
//! checks with the OS that a port is free at the moment it is given.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};

#[derive(Debug, Default)]
pub struct Ports {
    held: HashSet<u16>,
}

impl Ports {
    /// A port the OS says is free and no kiln job holds.
    pub fn take_free(&mut self) -> Result<u16, String> {
        for _ in 0..64 {
            let port = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|l| l.local_addr())
                .map_err(|e| format!("no free port: {e}"))?
                .port();
            if self.held.insert(port) {
                return Ok(port);
            }
        }
        Err("no free port that kiln does not already hold".into())
    }

    /// `count` ports from `begin`, all free, or none taken.
    pub fn take_fixed(&mut self, begin: u16, count: u16, label: &str) -> Result<Vec<u16>, String> {
        let end = u32::from(begin) + u32::from(count);
        if end > 65_536 {
            return Err(format!("ports {label} {begin}+{count} run past 65535"));
        }
        let ports: Vec<u16> = (begin..).take(usize::from(count)).collect();
        for &p in &ports {
            if self.held.contains(&p) {
                return Err(format!("port {p} ({label}) is held by another kiln job"));
            }
            if let Err(e) = TcpListener::bind((Ipv4Addr::UNSPECIFIED, p)) {
                return Err(format!("port {p} ({label}) is in use on this machine: {e}"));
            }
        }
        self.held.extend(&ports);
        Ok(ports)
    }

    /// Marks ports as held again after a restart.
    pub fn hold(&mut self, ports: impl IntoIterator<Item = u16>) {
        self.held.extend(ports);
    }

    pub fn release(&mut self, ports: impl IntoIterator<Item = u16>) {
        for p in ports {
            self.held.remove(&p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_distinct_and_come_back() {
        let mut ports = Ports::default();
        let a = ports.take_free().expect("a port");
        let b = ports.take_free().expect("a port");
        assert_ne!(a, b);
        ports.release([a]);
        assert!(!ports.held.contains(&a));
    }

    #[test]
    fn fixed_ports_in_use_are_refused_whole() {
        let busy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind");
        let port = busy.local_addr().expect("addr").port();
        let mut ports = Ports::default();
        let err = ports.take_fixed(port, 1, "http").expect_err("in use");
        assert!(err.contains(&port.to_string()), "{err}");
        assert!(ports.held.is_empty());
        drop(busy);
        let got = ports.take_fixed(port, 1, "http").expect("free now");
        assert_eq!(got, vec![port]);
        assert!(ports.take_fixed(port, 1, "http").is_err(), "held by kiln");
        assert!(ports.take_fixed(65_535, 2, "x").is_err());
    }
}
