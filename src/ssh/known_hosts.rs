//! OpenSSH `known_hosts` files, read and indexed once per run (on a blocking thread): plain and
//! hashed (`|1|salt|hash`) host patterns, `[host]:port`, `*`/`?` wildcards, `!` negation and
//! `@revoked`. (`@cert-authority` lines are skipped: opsd does not ask servers for host certificates.)
//!
//! The index: lines naming hosts plainly are found by name in a map; hashed lines are grouped by
//! salt, so a host costs one HMAC per distinct salt and a map lookup per group (ssh-keygen -H gives
//! every line a salt of its own, so there one HMAC per hashed line remains: a hash cannot be undone);
//! only lines with wildcards or negations are scanned.

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use russh::keys::ssh_key::{Algorithm, PublicKey};
use std::collections::HashMap;
use std::path::Path;

/// What a known_hosts file says about a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A line lists this host with this key.
    Trusted,
    /// The host is listed, but only with other keys: the key changed, or someone is in the middle.
    Mismatch { line: usize },
    /// The key is marked `@revoked`.
    Revoked { line: usize },
    /// The host is not listed at all.
    Unknown,
}

#[derive(Debug)]
enum Pattern {
    Glob { negated: bool, glob: String },
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug)]
struct Entry {
    line: usize,
    revoked: bool,
    patterns: Vec<Pattern>,
    key: PublicKey,
}

/// A parsed and indexed known_hosts file.
#[derive(Debug, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
    /// Plain host name (lower case) → the entries naming it, for lines of plain names only.
    plain: HashMap<String, Vec<usize>>,
    /// Salt → hash → the entries, for lines of hashed names only.
    hashed: HashMap<Vec<u8>, HashMap<Vec<u8>, Vec<usize>>>,
    /// Entries with wildcards or negations (or mixed kinds): matched line by line.
    scanned: Vec<usize>,
}

impl KnownHosts {
    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Parse a file's text. Lines that cannot be parsed are skipped, as OpenSSH does.
    pub fn parse(text: &str) -> KnownHosts {
        let mut entries = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let mut first = fields.next().unwrap_or_default();
            let mut revoked = false;
            if first.starts_with('@') {
                match first {
                    "@revoked" => revoked = true,
                    _ => continue,
                }
                first = match fields.next() {
                    Some(f) => f,
                    None => continue,
                };
            }
            let (Some(kind), Some(b64)) = (fields.next(), fields.next()) else {
                continue;
            };
            let Ok(key) = PublicKey::from_openssh(&format!("{kind} {b64}")) else {
                continue;
            };
            let patterns = first.split(',').filter_map(parse_pattern).collect();
            entries.push(Entry { line: i + 1, revoked, patterns, key });
        }
        let mut hosts = KnownHosts { entries, ..KnownHosts::default() };
        for (idx, e) in hosts.entries.iter().enumerate() {
            let plain = |p: &Pattern| matches!(p, Pattern::Glob { negated: false, glob } if !glob.contains(['*', '?']));
            if !e.patterns.is_empty() && e.patterns.iter().all(plain) {
                for p in &e.patterns {
                    if let Pattern::Glob { glob, .. } = p {
                        hosts.plain.entry(glob.clone()).or_default().push(idx);
                    }
                }
            } else if !e.patterns.is_empty() && e.patterns.iter().all(|p| matches!(p, Pattern::Hashed { .. })) {
                for p in &e.patterns {
                    if let Pattern::Hashed { salt, hash } = p {
                        hosts.hashed.entry(salt.clone()).or_default().entry(hash.clone()).or_default().push(idx);
                    }
                }
            } else {
                hosts.scanned.push(idx);
            }
        }
        hosts
    }

    /// The lines that apply to `host` on `port`, in file order: done once per host (on a blocking
    /// thread: hashed names cost an HMAC per salt) and used for both the key-type preference and
    /// the check.
    pub fn lookup(&self, host: &str, port: u16) -> HostEntries {
        let name = host_name(host, port);
        let mut found: Vec<usize> = self.plain.get(&name.to_ascii_lowercase()).cloned().unwrap_or_default();
        for (salt, by_hash) in &self.hashed {
            let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else { continue };
            mac.update(name.as_bytes());
            if let Some(idx) = by_hash.get(mac.finalize().into_bytes().as_slice()) {
                found.extend(idx);
            }
        }
        found.extend(self.scanned.iter().copied().filter(|&i| host_matches(&self.entries[i].patterns, &name)));
        found.sort_unstable();
        found.dedup();
        let entries = found.into_iter().map(|i| &self.entries[i]).map(|e| (e.line, e.revoked, e.key.clone())).collect();
        HostEntries { entries }
    }

    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> Verdict {
        self.lookup(host, port).check(key)
    }

    pub fn algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        self.lookup(host, port).algorithms()
    }
}

/// The known_hosts lines that apply to one host: (line, revoked, key).
#[derive(Debug, Clone, Default)]
pub struct HostEntries {
    entries: Vec<(usize, bool, PublicKey)>,
}

impl HostEntries {
    /// Check `key` as OpenSSH does: a revoked key is refused wherever its `@revoked` line is; a
    /// different key of the same type is a mismatch; keys of other types only make the host unknown.
    pub fn check(&self, key: &PublicKey) -> Verdict {
        let same = |k: &PublicKey| k.key_data() == key.key_data();
        if let Some((line, ..)) = self.entries.iter().find(|(_, revoked, k)| *revoked && same(k)) {
            return Verdict::Revoked { line: *line };
        }
        let mut listed = self.entries.iter().filter(|(_, revoked, _)| !revoked);
        if listed.clone().any(|(_, _, k)| same(k)) {
            return Verdict::Trusted;
        }
        match listed.find(|(_, _, k)| k.algorithm() == key.algorithm()) {
            Some((line, ..)) => Verdict::Mismatch { line: *line },
            None => Verdict::Unknown,
        }
    }

    /// The key algorithms listed, in file order: the client asks the server for these first, as
    /// OpenSSH does, so a host known by its ECDSA key is not asked for its Ed25519 key.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        let mut v: Vec<Algorithm> = Vec::new();
        for (_, revoked, k) in &self.entries {
            if !revoked && !v.contains(&k.algorithm()) {
                v.push(k.algorithm());
            }
        }
        v
    }
}

fn host_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

fn parse_pattern(p: &str) -> Option<Pattern> {
    if let Some(rest) = p.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        let b = base64::engine::general_purpose::STANDARD;
        return Some(Pattern::Hashed { salt: b.decode(salt).ok()?, hash: b.decode(hash).ok()? });
    }
    let (negated, glob) = match p.strip_prefix('!') {
        Some(g) => (true, g),
        None => (false, p),
    };
    Some(Pattern::Glob { negated, glob: glob.to_ascii_lowercase() })
}

/// OpenSSH's rule: a negated match rules the line out; otherwise any positive match selects it.
fn host_matches(patterns: &[Pattern], name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    let mut matched = false;
    for p in patterns {
        match p {
            Pattern::Glob { negated, glob } => {
                if glob_match(glob.as_bytes(), lower.as_bytes()) {
                    if *negated {
                        return false;
                    }
                    matched = true;
                }
            }
            Pattern::Hashed { salt, hash } => {
                let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(salt) else {
                    continue;
                };
                mac.update(name.as_bytes());
                if mac.verify_slice(hash).is_ok() {
                    matched = true;
                }
            }
        }
    }
    matched
}

fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_match(&p[1..], s) || (!s.is_empty() && glob_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob_match(&p[1..], &s[1..]),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    /// The indexed lookup finds exactly what a scan of every line finds, in file order, for plain,
    /// hashed, wildcard, negated and mixed lines.
    #[test]
    fn the_index_finds_what_a_scan_finds() {
        let b = base64::engine::general_purpose::STANDARD;
        let hashed = |salt: &[u8], name: &str| {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
            mac.update(name.as_bytes());
            format!("|1|{}|{}", b.encode(salt), b.encode(mac.finalize().into_bytes()))
        };
        let text = [
            format!("web1,Web2 {K1}"),
            format!("{} {K1}", hashed(b"salt-one-20-bytes!!!", "web1")),
            format!("{} {K1}", hashed(b"salt-one-20-bytes!!!", "[db]:2222")),
            format!("{} {K2}", hashed(b"another-salt-of-20b!", "web2")),
            format!("web* {K2}"),
            format!("*,!web2 {K1}"),
            format!("[db]:2222,{} {K2}", hashed(b"x", "web1")),
            format!("@revoked web1 {K2}"),
        ]
        .join("\n");
        let kh = KnownHosts::parse(&text);
        assert_eq!((kh.plain.len(), kh.hashed.len(), kh.scanned.len()), (2, 2, 3));
        for (host, port) in [("web1", 22), ("WEB2", 22), ("web2", 22), ("db", 2222), ("db", 22), ("other", 22)] {
            let name = host_name(host, port);
            let scan: Vec<usize> =
                kh.entries.iter().filter(|e| host_matches(&e.patterns, &name)).map(|e| e.line).collect();
            let indexed: Vec<usize> = kh.lookup(host, port).entries.iter().map(|(l, ..)| *l).collect();
            assert_eq!(indexed, scan, "{host}:{port}");
        }
        assert_eq!(kh.lookup("web1", 22).entries.iter().map(|(l, ..)| *l).collect::<Vec<_>>(), vec![1, 2, 5, 6, 7, 8]);
    }

    use super::*;

    const K1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAII6iYO6jE/cYBdcVSmWCttnKz4aBjpYHN79jA9Bcy5Nb";
    const K2: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK5LYkdjRCgNIsJbcOGu0YMbVHWBlqvL/fsxvl69bcDN";
    const E1: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBIn0mBFKAYPRhNYoTXv4wyKt4Nqcxj9C2PmuqAmFOxPctCRzm7eXmeb6RLQaOBqQa0VrBBulXrxu+GQy4/jRK/0=";

    fn key(s: &str) -> PublicKey {
        PublicKey::from_openssh(s).unwrap()
    }

    #[test]
    fn plain_ports_and_mismatch() {
        let kh = KnownHosts::parse(&format!("# c\n[127.0.1.4]:2222 {K1}\n10.0.0.1 {K1}\n"));
        assert_eq!(kh.check("127.0.1.4", 2222, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("127.0.1.4", 2222, &key(K2)), Verdict::Mismatch { line: 2 });
        assert_eq!(kh.check("127.0.1.4", 22, &key(K1)), Verdict::Unknown);
        assert_eq!(kh.check("10.0.0.1", 22, &key(K1)), Verdict::Trusted);
    }

    #[test]
    fn wildcards_negation_and_revocation() {
        let kh = KnownHosts::parse(&format!("*.internal,!bad.internal {K1}\nip-*.internal {K2}\n@revoked * {K2}\n"));
        assert_eq!(kh.check("ip-1.internal", 22, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("bad.internal", 22, &key(K1)), Verdict::Unknown);
        // Revoked even though an earlier line lists the same key.
        assert_eq!(kh.check("ip-1.internal", 22, &key(K2)), Verdict::Revoked { line: 3 });
    }

    #[test]
    fn other_key_types_make_a_host_unknown_not_changed() {
        let kh = KnownHosts::parse(&format!("h {E1}\n"));
        assert_eq!(kh.check("h", 22, &key(K1)), Verdict::Unknown);
        assert_eq!(kh.algorithms("h", 22), vec![key(E1).algorithm()]);
        assert_eq!(kh.algorithms("other", 22), vec![]);
    }

    #[test]
    fn hashed_names() {
        // `ssh-keygen -H` output for "[127.0.1.4]:2222", computed with the same HMAC-SHA1 construction.
        let salt = [7u8; 20];
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.1.4]:2222");
        let b = base64::engine::general_purpose::STANDARD;
        let line = format!("|1|{}|{} {K1}", b.encode(salt), b.encode(mac.finalize().into_bytes()));
        let kh = KnownHosts::parse(&line);
        assert_eq!(kh.check("127.0.1.4", 2222, &key(K1)), Verdict::Trusted);
        assert_eq!(kh.check("127.0.1.5", 2222, &key(K1)), Verdict::Unknown);
    }
}
