//! Schedule expressions: EventBridge `rate()` and `cron()`, five-field Unix cron, `@daily`-style
//! shortcuts and `@every <duration>`. This module parses and validates; [`super::calendar`] computes
//! the firing times.

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use serde::{de, Deserialize, Deserializer};
use std::fmt;
use std::time::Duration;

/// When and how a scheduled job fires: the schedule and the job file's timing keys.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub schedule: Schedule,
    /// The wall clock cron schedules are read on (`timezone`, default UTC as in EventBridge).
    pub timezone: chrono_tz::Tz,
    /// Each firing waits a random delay in `[0, jitter)`.
    pub jitter: Duration,
    pub overlap: Overlap,
    /// After downtime, run once at start if a firing was missed (systemd's `Persistent=`).
    pub catch_up: bool,
}

/// What a firing does while the previous run of the same job is still running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overlap {
    /// Do not start; record the firing as skipped with the reason.
    #[default]
    Skip,
    /// Start when the running one ends; at most one firing waits, later ones are skipped.
    Queue,
    /// Start at once, beside the running one.
    Allow,
}

impl Overlap {
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Skip => "skip",
            Overlap::Queue => "queue",
            Overlap::Allow => "allow",
        }
    }
}

/// An IANA time zone name from a job file.
#[derive(Debug, Clone, Copy)]
pub struct TimeZone(pub chrono_tz::Tz);

impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map(TimeZone).map_err(|_| {
            de::Error::custom(format!("unknown time zone {s:?}; use an IANA name like \"Europe/Berlin\" or \"UTC\""))
        })
    }
}

/// A validated schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// `rate(N unit)`: every N minutes, hours or days; or `@every 30s` (any duration from 1 s).
    Rate { every: Duration, text: String },
    /// `cron(...)` (EventBridge, six fields with a year) or Unix cron (five fields, `@daily`).
    /// `periodic` is Vixie cron's "wildcard job" test: the minute or the hour field starts with `*`
    /// (or is a step).
    /// It decides what a DST change does to the job (see [`super::calendar`]).
    Cron { cron: Box<Cron>, periodic: bool, text: String },
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let s = s.trim();
        if let Some(inner) = strip_call(s, "rate") {
            return parse_rate(inner).map(|every| Schedule::Rate { every, text: s.to_string() });
        }
        if let Some(inner) = strip_call(s, "cron") {
            let periodic = periodic(inner);
            return parse_eventbridge_cron(inner).map(|c| Schedule::Cron {
                cron: Box::new(c),
                periodic,
                text: s.to_string(),
            });
        }
        if s.starts_with("rate") || s.starts_with("cron") {
            return Err(format!("{s:?} is malformed; write rate(5 minutes) or cron(0 12 * * ? *)"));
        }
        if let Some(d) = s.strip_prefix("@every") {
            return parse_every(d).map(|every| Schedule::Rate { every, text: s.to_string() });
        }
        let periodic = match s {
            "@hourly" => true,
            _ if s.starts_with('@') => false,
            _ => periodic(s),
        };
        parse_unix_cron(s).map(|c| Schedule::Cron { cron: Box::new(c), periodic, text: s.to_string() })
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

/// Vixie cron's test for a "wildcard" job: its minute or hour field starts with `*`; a step
/// (`0/5`, EventBridge's way to write `*/5`) counts as well.
fn periodic(fields: &str) -> bool {
    fields.split_whitespace().take(2).any(|f| f.starts_with('*') || f.contains('/'))
}

/// `@every 90s`, `@every 1h30m`: a fixed interval (as in robfig/cron), from one second up.
fn parse_every(d: &str) -> Result<Duration, String> {
    let d = d.trim();
    let every = humantime::parse_duration(d)
        .map_err(|e| format!("@every {d}: {e}; write a duration like @every 30s or @every 1h30m"))?;
    if every < Duration::from_secs(1) || every.subsec_nanos() != 0 {
        return Err(format!("@every {d}: the interval must be whole seconds, at least 1s"));
    }
    if every > Duration::from_secs(366 * 86400) {
        return Err(format!("@every {d}: the interval must be at most a year; use a cron schedule"));
    }
    Ok(every)
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
    if f.len() == 7 {
        return Err(format!(
            "cron({inner}) has seven fields; EventBridge cron takes six, with no seconds: minutes hours day-of-month month day-of-week year, like cron(0 12 * * ? *)"
        ));
    }
    let Ok(fields) = <[&str; 6]>::try_from(f.as_slice()) else {
        return Err(format!(
            "cron({inner}) has {} fields; EventBridge cron takes six: minutes hours day-of-month month day-of-week year, like cron(0 12 * * ? *)",
            f.len()
        ));
    };
    let (dom, dow) = (f[2], f[4]);
    match (dom == "?", dow == "?") {
        (true, true) => return Err(format!("cron({inner}): only one of day-of-month and day-of-week may be ?")),
        (false, false) => {
            return Err(format!("cron({inner}): day-of-month and day-of-week cannot both be set; put ? in one of them"))
        }
        _ => {}
    }
    let pattern = super::cron_fields::eventbridge(fields).map_err(|e| format!("cron({inner}): {e}"))?;
    CronParser::builder()
        .seconds(Seconds::Required)
        .year(Year::Required)
        .alternative_weekdays(true)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("cron({inner}) could not be compiled ({pattern}: {e}); please report this"))
}

fn parse_unix_cron(s: &str) -> Result<Cron, String> {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if s.starts_with('@') {
        if !matches!(s, "@yearly" | "@annually" | "@monthly" | "@weekly" | "@daily" | "@midnight" | "@hourly") {
            return Err(format!("{s:?}: unknown shortcut; use @hourly, @daily, @weekly, @monthly or @yearly"));
        }
        let s = if s == "@midnight" { "@daily" } else { s };
        return CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| format!("{s:?} could not be compiled ({e}); please report this"));
    }
    let pattern = match fields.len() {
        5 => {
            let f = [fields[0], fields[1], fields[2], fields[3], fields[4]];
            super::cron_fields::unix(f).map_err(|e| format!("{s:?}: {e}"))?
        }
        6 => {
            return Err(format!(
                "{s:?} has six fields; Unix cron takes five (minute hour day-of-month month day-of-week) and no seconds; for EventBridge's six fields with a year write cron({s})"
            ))
        }
        _ => {
            return Err(format!(
                "{s:?} is not a schedule: use rate(5 minutes), cron(0 12 * * ? *), a five-field cron like \"0 3 * * *\", or @hourly/@daily"
            ))
        }
    };
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("{s:?} could not be compiled ({pattern}: {e}); please report this"))
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
        for ok in ["0 3 * * *", "*/5 * * * *", "@hourly", "@daily", "0 0 1 jan *", "@every 2s", "@every 1h 30m"] {
            assert!(Schedule::parse(ok).is_ok(), "{ok}: {:?}", Schedule::parse(ok).err());
        }
        for bad in [
            "0 3 * *",
            "0 0 3 * * *",
            "@sometimes",
            "rate(5 minutes",
            "60 * * * *",
            "every day",
            "@every",
            "@every 0s",
            "@every 500ms",
            "@every soon",
            "@every 400days",
        ] {
            assert!(Schedule::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn invalid_expressions_say_what_to_write() {
        let msg = |s: &str| Schedule::parse(s).unwrap_err();
        assert!(msg("rate(1 minutes)").contains("singular unit: rate(1 minute)"), "{}", msg("rate(1 minutes)"));
        assert!(msg("rate(5 minute)").contains("plural unit: rate(5 minutes)"));
        assert!(msg("rate(0 minutes)").contains("positive integer"));
        assert!(msg("rate(5 seconds)").contains("use minute(s), hour(s) or day(s)"));
        assert!(msg("cron(0 12 * * * *)").contains("cannot both be set; put ? in one of them"));
        assert!(msg("cron(0 12 ? * ? *)").contains("only one of day-of-month and day-of-week may be ?"));
        assert!(msg("cron(0 12 * *)").contains("EventBridge cron takes six"));
        assert!(msg("cron(? 12 * * ? *)").contains("? is only allowed in day-of-month or day-of-week"));
        assert!(msg("cron(61 12 * * ? *)").contains("the minutes field \"61\": 61 is out of range"));
        assert!(msg("0 3 * *").contains("five-field cron"));
        assert!(msg("@sometimes").contains("use @hourly, @daily"));
        assert!(msg("@every 500ms").contains("whole seconds, at least 1s"));
    }

    #[test]
    fn periodic_follows_vixie_cron() {
        let periodic = |s: &str| match Schedule::parse(s).unwrap() {
            Schedule::Cron { periodic, .. } => periodic,
            Schedule::Rate { .. } => panic!("{s} is a rate"),
        };
        assert!(periodic("*/15 * * * *"));
        assert!(periodic("30 * * * *"));
        assert!(periodic("* 2 * * *"));
        assert!(periodic("@hourly"));
        assert!(periodic("cron(0/5 * ? * MON-FRI *)"));
        assert!(periodic("cron(0/5 8-17 ? * MON-FRI *)"));
        assert!(!periodic("30 2 * * *"));
        assert!(!periodic("0 2,14 * * *"));
        assert!(!periodic("@daily"));
        assert!(!periodic("cron(15 10 ? * 6L *)"));
    }
}
