//! Schedule expressions: EventBridge `rate()` and `cron()`, five-field Unix cron and `@daily`-style
//! shortcuts. This module parses and validates; computing firing times belongs to the daemon's scheduler.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// A validated schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// `rate(N unit)`: every N minutes, hours or days.
    Rate { every: Duration, text: String },
    /// `cron(...)` (EventBridge, six fields with a year) or Unix cron (five fields, `@daily`).
    Cron { cron: Box<Cron>, text: String },
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(inner) = strip_call(s, "rate") {
            return parse_rate(inner).map(|every| Schedule::Rate { every, text: s.to_string() });
        }
        if let Some(inner) = strip_call(s, "cron") {
            return parse_eventbridge_cron(inner).map(|c| Schedule::Cron { cron: Box::new(c), text: s.to_string() });
        }
        if s.starts_with("rate") || s.starts_with("cron") {
            return Err(format!("{s:?} is malformed; write rate(5 minutes) or cron(0 12 * * ? *)"));
        }
        parse_unix_cron(s).map(|c| Schedule::Cron { cron: Box::new(c), text: s.to_string() })
    }

    pub fn text(&self) -> &str {
        match self {
            Schedule::Rate { text, .. } | Schedule::Cron { text, .. } => text,
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Schedule::parse(&s).map_err(de::Error::custom)
    }
}

fn strip_call<'a>(s: &'a str, name: &str) -> Option<&'a str> {
    s.strip_prefix(name)?.trim_start().strip_prefix('(')?.strip_suffix(')')
}

/// EventBridge rules: a positive integer, the unit singular for 1 and plural otherwise.
fn parse_rate(inner: &str) -> Result<Duration, String> {
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let [n, unit] = parts[..] else {
        return Err(format!("rate({inner}) needs a value and a unit, like rate(5 minutes)"));
    };
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("rate({inner}): the value must be a positive integer"))?;
    let (secs, singular, plural) = match unit {
        "minute" | "minutes" => (60, "minute", "minutes"),
        "hour" | "hours" => (3600, "hour", "hours"),
        "day" | "days" => (86400, "day", "days"),
        u => return Err(format!("rate({inner}): unknown unit {u:?}; use minute(s), hour(s) or day(s)")),
    };
    if n == 1 && unit != singular {
        return Err(format!("rate({inner}): a value of 1 takes the singular unit: rate(1 {singular})"));
    }
    if n > 1 && unit != plural {
        return Err(format!("rate({inner}): a value above 1 takes the plural unit: rate({n} {plural})"));
    }
    n.checked_mul(secs).map(Duration::from_secs).ok_or_else(|| format!("rate({inner}) is too large"))
}

/// EventBridge `cron(minutes hours day-of-month month day-of-week year)`: day-of-week counts 1-7 from
/// Sunday, and exactly one of day-of-month and day-of-week must be `?`.
fn parse_eventbridge_cron(inner: &str) -> Result<Cron, String> {
    let f: Vec<&str> = inner.split_whitespace().collect();
    if f.len() != 6 {
        return Err(format!(
            "cron({inner}) has {} fields; EventBridge cron takes six: minutes hours day-of-month month day-of-week year, like cron(0 12 * * ? *)",
            f.len()
        ));
    }
    let (dom, dow) = (f[2], f[4]);
    match (dom == "?", dow == "?") {
        (true, true) => return Err(format!("cron({inner}): only one of day-of-month and day-of-week may be ?")),
        (false, false) => {
            return Err(format!("cron({inner}): day-of-month and day-of-week cannot both be set; put ? in one of them"))
        }
        _ => {}
    }
    if f[..2].iter().chain(&f[3..4]).any(|x| x.contains('?')) {
        return Err(format!("cron({inner}): ? is only allowed in day-of-month or day-of-week"));
    }
    let pattern = format!("0 {} {} {} {} {} {}", f[0], f[1], f[2], f[3], f[4], f[5]);
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .alternative_weekdays(true)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("cron({inner}) is not valid: {e}"))
}

fn parse_unix_cron(s: &str) -> Result<Cron, String> {
    let fields = s.split_whitespace().count();
    if !s.starts_with('@') && fields != 5 {
        return Err(format!(
            "{s:?} is not a schedule: use rate(5 minutes), cron(0 12 * * ? *), a five-field cron like \"0 3 * * *\", or @hourly/@daily"
        ));
    }
    if s.starts_with('@')
        && !matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly")
    {
        return Err(format!("{s:?}: unknown shortcut; use @hourly, @daily, @weekly, @monthly or @yearly"));
    }
    let s = if s == "@midnight" { "@daily" } else { s };
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(s)
        .map_err(|e| format!("{s:?} is not a valid cron expression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_follow_eventbridge_rules() {
        assert_eq!(parse_rate("15 minutes"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_rate("1 hour"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_rate("2 days"), Ok(Duration::from_secs(172800)));
        assert!(parse_rate("1 minutes").is_err());
        assert!(parse_rate("5 minute").is_err());
        assert!(parse_rate("0 minutes").is_err());
        assert!(parse_rate("-1 minutes").is_err());
        assert!(parse_rate("5 seconds").is_err());
        assert!(parse_rate("5").is_err());
    }

    #[test]
    fn eventbridge_cron() {
        for ok in [
            "cron(0 12 * * ? *)",
            "cron(15 10 ? * 6L 2026-2030)",
            "cron(0 8 1 * ? *)",
            "cron(0/5 8-17 ? * MON-FRI *)",
            "cron(0 9 ? * 3#2 *)",
            "cron(0 0 L * ? *)",
            "cron(0 0 15W * ? *)",
        ] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}: {:?}", Schedule::parse(ok).err());
        }
        for bad in [
            "cron(0 12 * * * *)",
            "cron(0 12 ? * ? *)",
            "cron(0 12 * *)",
            "cron(61 12 * * ? *)",
            "cron(0 12 * * ? * *)",
            "cron(? 12 * * ? *)",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn eventbridge_day_of_week_counts_from_sunday_as_one() {
        use chrono::{TimeZone, Utc};
        let Schedule::Cron { cron, .. } = Schedule::parse("cron(0 9 ? * 2 *)").unwrap() else { panic!() };
        // 2026-11-25 is a Wednesday; EventBridge's 2 is Monday.
        let next = cron.find_next_occurrence(&Utc.with_ymd_and_hms(2026, 11, 25, 0, 0, 0).unwrap(), false).unwrap();
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 11, 30, 9, 0, 0).unwrap());
    }

    #[test]
    fn unix_cron_and_shortcuts() {
        for ok in ["0 3 * * *", "*/5 * * * *", "@hourly", "@daily", "0 0 1 jan *"] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}: {:?}", Schedule::parse(ok).err());
        }
        for bad in ["0 3 * *", "0 0 3 * * *", "@sometimes", "rate(5 minutes", "60 * * * *", "every day"] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
