//! The fields of a cron expression, EventBridge's `cron()` or Unix's five fields: checked against
//! the documented grammar with opsd's own messages (naming the field and the rule), and rewritten
//! into the plain form croner evaluates: every range and step expanded to a list of values (so a
//! range that wraps, `20-2` or `FRI-MON`, is two runs of values), the specials (`L`, `nW`, `nL`,
//! `n#k`) passed on, `?` as `*`.
//!
//! EventBridge's grammar (docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html):
//!
//! | field | values | wildcards |
//! | --- | --- | --- |
//! | minutes | 0-59 | `, - * /` |
//! | hours | 0-23 | `, - * /` |
//! | day-of-month | 1-31 | `, - * ? / L W` |
//! | month | 1-12 or JAN-DEC | `, - * /` |
//! | day-of-week | 1-7 or SUN-SAT | `, - * ? L #` |
//! | year | 1970-2199 | `, - * /` |
//!
//! Ranges wrap as in Quartz, whose grammar EventBridge's is (`0/30 20-2 ? * MON-FRI *` is one of
//! AWS's own examples); years do not wrap. `L` alone in day-of-week is its last day, Saturday.
//! Quartz's `LW` and `L-n` are not in EventBridge's documentation and are refused with a message.

/// Which grammar a cron expression follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `cron(minutes hours day-of-month month day-of-week year)`, day-of-week 1-7 from Sunday.
    EventBridge,
    /// `minute hour day-of-month month day-of-week`, day-of-week 0-7 (0 and 7 are Sunday).
    Unix,
}

struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    /// Names for the values from `min` on (JAN.., SUN..), case-insensitive.
    names: &'static [&'static str],
    /// Ranges may wrap past the maximum to the minimum.
    wraps: bool,
}

const MONTHS: &[&str] = &["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"];
const DAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const MINUTES: Field = Field { name: "minutes", min: 0, max: 59, names: &[], wraps: true };
const HOURS: Field = Field { name: "hours", min: 0, max: 23, names: &[], wraps: true };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], wraps: true };
const MONTH: Field = Field { name: "month", min: 1, max: 12, names: MONTHS, wraps: true };
const EB_DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 1, max: 7, names: DAYS, wraps: true };
const YEAR: Field = Field { name: "year", min: 1970, max: 2199, names: &[], wraps: false };
// Vixie cron and cronie: no wrapping ranges; day-of-week 7 is Sunday again.
const UNIX_MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], wraps: false };
const UNIX_HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], wraps: false };
const UNIX_DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], wraps: false };
const UNIX_MONTH: Field = Field { name: "month", min: 1, max: 12, names: MONTHS, wraps: false };
const UNIX_DAY_OF_WEEK: Field = Field { name: "day-of-week", min: 0, max: 7, names: DAYS, wraps: false };

/// The six fields of `cron(...)`, checked, as croner's seven-field pattern (seconds first).
pub fn eventbridge(f: [&str; 6]) -> Result<String, String> {
    let dom = day_of_month(f[2])?;
    let dow = eb_day_of_week(f[4])?;
    Ok(format!(
        "0 {} {} {dom} {} {dow} {}",
        plain(&MINUTES, f[0])?,
        plain(&HOURS, f[1])?,
        plain(&MONTH, f[3])?,
        plain(&YEAR, f[5])?
    ))
}

/// The five fields of a Unix cron line, checked, as croner's five-field pattern.
pub fn unix(f: [&str; 5]) -> Result<String, String> {
    for (field, text) in [&UNIX_MINUTE, &UNIX_HOUR, &UNIX_DAY_OF_MONTH, &UNIX_MONTH, &UNIX_DAY_OF_WEEK].iter().zip(f) {
        if let Some(c) = without_names(field, text).chars().find(|c| matches!(c, '?' | 'L' | 'W' | '#')) {
            return Err(bad(
                field,
                text,
                format!(
                    "{c} is EventBridge's, not Unix cron's; write the schedule as cron(...) with six fields to use it"
                ),
            ));
        }
    }
    let dow = values(&UNIX_DAY_OF_WEEK, f[4])?;
    let dow = if f[4] == "*" {
        "*".to_string()
    } else {
        // 7 is Sunday, as 0.
        let mut days: Vec<u32> = dow.into_iter().map(|d| d % 7).collect();
        days.sort_unstable();
        days.dedup();
        join(&days)
    };
    Ok(format!(
        "{} {} {} {} {dow}",
        plain(&UNIX_MINUTE, f[0])?,
        plain(&UNIX_HOUR, f[1])?,
        plain(&UNIX_DAY_OF_MONTH, f[2])?,
        plain(&UNIX_MONTH, f[3])?
    ))
}

/// A field of values only: `*` stays, anything else becomes the list of its values.
fn plain(field: &Field, text: &str) -> Result<String, String> {
    if text == "*" {
        return Ok("*".into());
    }
    if let Some(c) = text.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(bad(field, text, format!("{c} is only allowed in day-of-month or day-of-week")));
    }
    if without_names(field, text).contains(['L', 'W']) {
        return Err(bad(field, text, "L and W are only allowed in day-of-month (and L in day-of-week)"));
    }
    values(field, text).map(|v| join(&v))
}

fn day_of_month(text: &str) -> Result<String, String> {
    let field = &DAY_OF_MONTH;
    match text {
        "?" | "*" => return Ok("*".into()),
        "L" => return Ok("L".into()),
        "LW" => {
            return Err(bad(field, text, "LW (Quartz's last weekday of the month) is not in EventBridge's cron grammar; use L for the last day, or nW for the weekday nearest day n"))
        }
        _ => {}
    }
    if text.contains(',') && text.split(',').any(|p| p == "L" || p.ends_with('W') || p == "?") {
        return Err(bad(field, text, "L, W and ? stand alone; they cannot be part of a list"));
    }
    if text.starts_with("L-") {
        return Err(bad(
            field,
            text,
            "L-n (Quartz's n days before the last) is not in EventBridge's cron grammar; use L for the last day",
        ));
    }
    if let Some(day) = text.strip_suffix('W') {
        let n = number(field, text, day)?;
        return Ok(format!("{n}W"));
    }
    if text.contains(['?', 'L', 'W', '#']) {
        return Err(bad(
            field,
            text,
            "write a day (1-31), a list, a range, a step, ? (any), L (the last day) or nW (the weekday nearest day n)",
        ));
    }
    values(field, text).map(|v| join(&v))
}

fn eb_day_of_week(text: &str) -> Result<String, String> {
    let field = &EB_DAY_OF_WEEK;
    match text {
        "?" | "*" => return Ok("*".into()),
        // "The L wildcard in the Day-of-week field specifies the last day of the week": Saturday.
        "L" => return Ok("7".into()),
        _ => {}
    }
    let terms = text.split(',').count();
    if text.contains('#') && terms > 1 {
        return Err(bad(
            field,
            text,
            "with # the field takes one expression only (AWS: \"3#1,6#3\" is not valid); use one job per day",
        ));
    }
    if terms > 1 && text.split(',').any(|p| p == "?" || p.ends_with('L')) {
        return Err(bad(field, text, "L and ? stand alone; they cannot be part of a list"));
    }
    if text.contains('/') {
        return Err(bad(
            field,
            text,
            "EventBridge takes no / (step) in day-of-week; list the days instead, like 2,4,6",
        ));
    }
    if let Some((day, nth)) = text.split_once('#') {
        let d = number(field, text, day)?;
        let k: u32 = nth
            .parse()
            .ok()
            .filter(|k| (1..=5).contains(k))
            .ok_or_else(|| bad(field, text, "after # comes which week of the month, 1 to 5"))?;
        return Ok(format!("{d}#{k}"));
    }
    if let Some(day) = text.strip_suffix('L') {
        let d = number(field, text, day)?;
        return Ok(format!("{d}L"));
    }
    if without_names(field, text).contains(['?', 'W', 'L']) {
        return Err(bad(field, text, "write a day (1-7 or SUN-SAT), a list, a range, ? (any), L (Saturday), nL (the last day n of the month) or n#k (the k-th day n)"));
    }
    values(field, text).map(|v| join(&v))
}

/// `text` in capitals without the field's names (JUL, WED): what is left of letters are wildcards.
fn without_names(field: &Field, text: &str) -> String {
    field.names.iter().fold(text.to_ascii_uppercase(), |t, n| t.replace(n, ""))
}

/// The values of a comma list of `*`, `*/s`, `a`, `a/s`, `a-b`, `a-b/s`.
fn values(field: &Field, text: &str) -> Result<Vec<u32>, String> {
    if text.is_empty() {
        return Err(format!("the {} field is empty", field.name));
    }
    let mut out = Vec::new();
    for item in text.split(',') {
        if item.is_empty() {
            return Err(bad(field, text, "an empty item in the list"));
        }
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(step(field, text, s)?)),
            None => (item, None),
        };
        let (from, to) = if base == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = base.split_once('-') {
            (number(field, text, a)?, number(field, text, b)?)
        } else {
            let a = number(field, text, base)?;
            (a, if step.is_some() { field.max } else { a })
        };
        if from > to && !field.wraps {
            let why = if field.name == "year" {
                "years do not wrap".to_string()
            } else {
                "Unix cron ranges do not wrap; write two ranges, or use cron(...), whose ranges wrap".to_string()
            };
            return Err(bad(field, text, format!("the range {base} goes backwards: {why}")));
        }
        // Walk from `from` to `to`, past the maximum back to the minimum when the range wraps.
        let span = field.max - field.min + 1;
        let len = (to + span - from) % span + 1;
        let step = step.unwrap_or(1);
        out.extend((0..len).step_by(step as usize).map(|k| field.min + (from - field.min + k) % span));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn step(field: &Field, text: &str, s: &str) -> Result<u32, String> {
    let most = field.max - field.min;
    s.parse::<u32>()
        .ok()
        .filter(|n| (1..=most.max(1)).contains(n))
        .ok_or_else(|| bad(field, text, format!("the step after / must be a whole number from 1 to {most}")))
}

/// One value: a number in the field's range or one of its names.
fn number(field: &Field, text: &str, s: &str) -> Result<u32, String> {
    if let Some(i) = field.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(field.min + i as u32);
    }
    let range = if field.names.is_empty() {
        format!("{} to {}", field.min, field.max)
    } else {
        format!("{} to {} or {}-{}", field.min, field.max, field.names[0], field.names[field.names.len() - 1])
    };
    match s.parse::<u32>() {
        Ok(n) if (field.min..=field.max).contains(&n) => Ok(n),
        Ok(n) => Err(bad(field, text, format!("{n} is out of range; {} run from {range}", field.name))),
        Err(_) => Err(bad(field, text, format!("{s:?} is not a value; {} run from {range}", field.name))),
    }
}

/// A field's error: the field, its text, the rule it breaks.
fn bad(field: &Field, text: &str, rule: impl std::fmt::Display) -> String {
    format!("the {} field {text:?}: {rule}", field.name)
}

fn join(v: &[u32]) -> String {
    v.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_steps_expand_and_wrap() {
        assert_eq!(values(&HOURS, "20-2"), Ok(vec![0, 1, 2, 20, 21, 22, 23]));
        assert_eq!(values(&MINUTES, "0/15"), Ok(vec![0, 15, 30, 45]));
        assert_eq!(values(&MINUTES, "1/10"), Ok(vec![1, 11, 21, 31, 41, 51]));
        assert_eq!(values(&MINUTES, "*/20"), Ok(vec![0, 20, 40]));
        assert_eq!(values(&MINUTES, "50-10/5"), Ok(vec![0, 5, 10, 50, 55]));
        assert_eq!(values(&EB_DAY_OF_WEEK, "FRI-MON"), Ok(vec![1, 2, 6, 7]));
        assert_eq!(values(&MONTH, "NOV-feb"), Ok(vec![1, 2, 11, 12]));
        assert_eq!(values(&YEAR, "2026-2028,2030"), Ok(vec![2026, 2027, 2028, 2030]));
        assert_eq!(values(&UNIX_DAY_OF_WEEK, "MON-FRI"), Ok(vec![1, 2, 3, 4, 5]));
    }

    #[test]
    fn messages_name_the_field_and_the_rule() {
        let e = |r: Result<String, String>| r.unwrap_err();
        assert!(e(eventbridge(["0", "24", "*", "*", "?", "*"]))
            .contains("the hours field \"24\": 24 is out of range; hours run from 0 to 23"));
        assert!(e(eventbridge(["0", "0", "*", "*", "?", "1969"])).contains("year run from 1970 to 2199"));
        assert!(e(eventbridge(["0", "0", "*", "*", "?", "2200"])).contains("2200 is out of range"));
        assert!(
            e(eventbridge(["0", "0", "?", "*", "3#1,6#3", "*"])).contains("with # the field takes one expression only")
        );
        assert!(e(eventbridge(["0", "0", "?", "*", "3#6", "*"])).contains("which week of the month, 1 to 5"));
        assert!(e(eventbridge(["0", "0", "LW", "*", "?", "*"])).contains("not in EventBridge's cron grammar"));
        assert!(e(eventbridge(["0/60", "0", "*", "*", "?", "*"])).contains("from 1 to 59"));
        assert!(e(eventbridge(["0", "0", "*", "*", "?", "2030-2026"])).contains("years do not wrap"));
        assert!(e(eventbridge(["L", "0", "*", "*", "?", "*"])).contains("only allowed in day-of-month"));
        assert!(e(eventbridge(["0", "0", "?", "*", "2/2", "*"])).contains("no / (step) in day-of-week"));
        assert!(e(eventbridge(["0", "0", "*", "FOO", "?", "*"]))
            .contains("\"FOO\" is not a value; month run from 1 to 12 or JAN-DEC"));
        assert!(e(unix(["0", "22-2", "*", "*", "*"])).contains("the range 22-2 goes backwards"));
        assert!(e(unix(["0", "0", "L", "*", "*"])).contains("L is EventBridge's, not Unix cron's"));
        assert!(e(unix(["60", "0", "*", "*", "*"])).contains("the minute field \"60\": 60 is out of range"));
    }

    #[test]
    fn specials_pass_through() {
        assert_eq!(eventbridge(["15", "10", "?", "*", "6L", "2026-2027"]), Ok("0 15 10 * * 6L 2026,2027".into()));
        assert_eq!(eventbridge(["0", "9", "?", "*", "MON#1", "*"]), Ok("0 0 9 * * 2#1 *".into()));
        assert_eq!(eventbridge(["0", "9", "?", "*", "L", "*"]), Ok("0 0 9 * * 7 *".into()));
        assert_eq!(eventbridge(["0", "9", "15W", "*", "?", "*"]), Ok("0 0 9 15W * * *".into()));
        assert_eq!(eventbridge(["0", "9", "L", "*", "?", "*"]), Ok("0 0 9 L * * *".into()));
        assert_eq!(unix(["0", "9", "*", "*", "7"]), Ok("0 9 * * 0".into()));
    }
}
