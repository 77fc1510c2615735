//! Value types of job and config files that parse from strings: durations, byte sizes, limits.
//! Each validates while deserializing, so a bad value is reported at its own line and column.

use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// No timeout or interval in opsd needs more; the bound keeps deadline arithmetic far from overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// A duration written as humantime text: `"10s"`, `"5m"`, `"1h 30m"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = parse_duration(&s).map_err(de::Error::custom)?;
        if v.is_zero() {
            return Err(de::Error::custom("a duration of zero is not allowed; give a positive duration like \"30s\""));
        }
        Ok(HumanDuration(v))
    }
}

/// A duration where zero means "off": `"0s"` is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationOrOff(pub Duration);

impl<'de> Deserialize<'de> for DurationOrOff {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        parse_duration(&s).map(DurationOrOff).map_err(de::Error::custom)
    }
}

/// How long history is kept: a humantime duration from 1 s to 10 years (`"30d"`, `"26weeks"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Duration);

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let v = humantime::parse_duration(s.trim()).map_err(|e| {
            de::Error::custom(format!("{s:?} is not a duration ({e}); write it like \"30d\" or \"12weeks\""))
        })?;
        if v < Duration::from_secs(1) || v > Duration::from_secs(3650 * 86400) {
            return Err(de::Error::custom(format!("{s:?} is outside 1s..=3650d; the default is \"30d\"")));
        }
        Ok(Retention(v))
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let v = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{s:?} is not a duration ({e}); write it like \"30s\", \"5m\" or \"1h\""))?;
    if v > MAX_DURATION {
        return Err(format!("{s:?} is longer than opsd allows (30 days); give a shorter duration"));
    }
    Ok(v)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

/// A byte count written as `"64KiB"`, `"1MB"`, `"4096"` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub fn parse(s: &str) -> Result<ByteSize, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (num, unit) = s.split_at(split);
        let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size; write it like \"64KiB\" or \"1MiB\""))?;
        let mult: u64 = match unit.trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "KiB" => 1 << 10,
            "MB" => 1_000_000,
            "MiB" => 1 << 20,
            "GB" => 1_000_000_000,
            "GiB" => 1 << 30,
            u => return Err(format!("unknown size unit {u:?}; use B, KB, KiB, MB, MiB, GB or GiB")),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a size like \"64KiB\" or a number of bytes"))?
        {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
            write!(f, "{}MiB", n >> 20)
        } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
            write!(f, "{}KiB", n >> 10)
        } else {
            write!(f, "{n}B")
        }
    }
}

/// A count of hosts: absolute (`50`) or a share of the run's targets (`"20%"`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    Count(u64),
    Percent(f64),
}

impl Limit {
    pub fn parse(s: &str) -> Result<Limit, String> {
        let s = s.trim();
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.trim().parse().map_err(|_| format!("{s:?} is not a percentage; write it like \"10%\""))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("{s:?} is outside 0%..100%"));
            }
            Ok(Limit::Percent(p))
        } else {
            s.parse().map(Limit::Count).map_err(|_| format!("{s:?} is neither a number nor a percentage like \"10%\""))
        }
    }

    /// As a concurrency for `n` targets: percentages round up, and never below one host at a time.
    pub fn concurrency(self, n: usize) -> usize {
        let v = match self {
            Limit::Count(c) => c as usize,
            Limit::Percent(p) => ((n as f64) * p / 100.0).ceil() as usize,
        };
        v.max(1)
    }

    /// As an error budget for `n` targets: percentages round down (SSM MaxErrors semantics:
    /// the run stops starting hosts once errors exceed this number).
    pub fn error_budget(self, n: usize) -> usize {
        match self {
            Limit::Count(c) => c as usize,
            Limit::Percent(p) => ((n as f64) * p / 100.0).floor() as usize,
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)
            .map_err(|_| de::Error::custom("expected a number of hosts or a percentage like \"10%\""))?
        {
            Raw::N(n) => Ok(Limit::Count(n)),
            Raw::S(s) => Limit::parse(&s).map_err(de::Error::custom),
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Count(c) => write!(f, "{c}"),
            Limit::Percent(p) => write!(f, "{p}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes() {
        assert_eq!(ByteSize::parse("64KiB"), Ok(ByteSize(65536)));
        assert_eq!(ByteSize::parse("1MB"), Ok(ByteSize(1_000_000)));
        assert_eq!(ByteSize::parse("12"), Ok(ByteSize(12)));
        assert!(ByteSize::parse("12 parsecs").is_err());
        assert!(ByteSize::parse("KiB").is_err());
        assert_eq!(ByteSize(65536).to_string(), "64KiB");
    }

    #[test]
    fn limits_resolve_against_target_count() {
        assert_eq!(Limit::parse("20%").unwrap().concurrency(7), 2);
        assert_eq!(Limit::parse("1%").unwrap().concurrency(3), 1);
        assert_eq!(Limit::Count(0).concurrency(3), 1);
        assert_eq!(Limit::parse("10%").unwrap().error_budget(25), 2);
        assert_eq!(Limit::parse("10%").unwrap().error_budget(5), 0);
        assert_eq!(Limit::parse("3").unwrap().error_budget(5), 3);
        assert!(Limit::parse("120%").is_err());
        assert!(Limit::parse("many").is_err());
    }

    #[test]
    fn durations_are_positive_and_bounded() {
        #[derive(Deserialize)]
        struct T {
            d: HumanDuration,
        }
        let parse = |v: &str| toml::from_str::<T>(&format!("d = {v:?}")).map(|t| t.d.0);
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert!(parse("0s").is_err());
        assert!(parse("30000000000y").is_err(), "a huge duration would overflow deadline arithmetic");
        assert!(parse("soon").is_err());
    }

    proptest::proptest! {
        #[test]
        fn concurrency_is_between_one_and_the_target_count(p in 0.0f64..=100.0, n in 1usize..10_000) {
            let c = Limit::Percent(p).concurrency(n);
            proptest::prop_assert!(c >= 1 && c <= n);
            proptest::prop_assert!(Limit::Percent(p).error_budget(n) <= n);
        }
    }
}
