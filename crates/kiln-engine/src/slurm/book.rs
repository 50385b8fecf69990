//! The ports the Slurm engine has given out (docs/engines.md 3.4). kiln cannot
//! ask a remote node whether a port is free, so it hands them out from a range
//! the admin keeps free on compute nodes (`--slurm-ports`), and never gives one
//! out twice while it is held. One book for all nodes: stricter than one per
//! node address, and the test cluster's nodes share one address anyway.

use std::collections::HashSet;

#[derive(Debug)]
pub struct Book {
    first: u16,
    last: u16,
    next: u16,
    held: HashSet<u16>,
}

impl Book {
    pub fn new(first: u16, last: u16) -> Book {
        let (first, last) = (first.min(last), first.max(last));
        Book {
            first,
            last,
            next: first,
            held: HashSet::new(),
        }
    }

    /// `count` ports from the range that nobody holds, or none.
    pub fn take(&mut self, count: u16) -> Result<Vec<u16>, String> {
        let size = u32::from(self.last) - u32::from(self.first) + 1;
        let mut got = Vec::new();
        for _ in 0..size {
            if got.len() == usize::from(count) {
                break;
            }
            let p = self.next;
            self.next = if p >= self.last { self.first } else { p + 1 };
            if self.held.insert(p) {
                got.push(p);
            }
        }
        if got.len() < usize::from(count) {
            self.release(got);
            return Err(format!(
                "all ports {}-{} are held by kiln's jobs",
                self.first, self.last
            ));
        }
        Ok(got)
    }

    /// Fixed ports (`beginAt`), booked as asked.
    pub fn fixed(&mut self, begin: u16, count: u16) -> Vec<u16> {
        let ports: Vec<u16> = (begin..=u16::MAX).take(usize::from(count)).collect();
        self.held.extend(&ports);
        ports
    }

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
    fn ports_are_never_given_twice_while_held() {
        let mut book = Book::new(20_000, 20_003);
        let a = book.take(3).expect("three");
        assert!(book.take(2).is_err(), "only one left");
        assert_eq!(book.take(1).expect("the last").len(), 1);
        book.release(a.clone());
        let b = book.take(3).expect("given back");
        let mut b2 = b.clone();
        b2.sort_unstable();
        let mut a2 = a;
        a2.sort_unstable();
        assert_eq!(a2, b2);
    }
}
