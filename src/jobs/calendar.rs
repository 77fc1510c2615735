//! Firing times: pure calendar arithmetic over [`Schedule`]s (croner matches wall-clock times,
//! chrono-tz maps them to instants). No clock is read here; callers pass `after`.
//!
//! Rules (the README's "Schedules" section states them for users):
//! - `rate()` / `@every`: instants `anchor + k·every`, k ≥ 1. Time zones do not apply.
//! - cron: evaluated on the wall clock of the job's time zone (UTC unless `timezone` is set).
//!   - A wall-clock time that a DST change skips (spring forward): a *periodic* schedule (minute or
//!     hour field starting with `*` or a step) skips it; any other schedule fires at the first
//!     instant after the gap (`30 2 * * *` fires at 03:00 on that day). Vixie cron does the same.
//!   - A wall-clock time that a DST change repeats (fall back): a periodic schedule fires at both
//!     occurrences (every 30 minutes stays every 30 minutes of real time); any other schedule fires
//!     once, at the first occurrence.
//! - Firing times are strictly increasing, and `next_after(t)` never skips a firing in `(t, result)`.

use super::schedule::Schedule;
use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

/// A DST change moves the wall clock by at most this much (real zones: 30 min to 2 h).
const MAX_SHIFT: Duration = Duration::hours(3);

/// The first firing strictly after `after`, or `None` when the schedule has no more (a cron whose
/// year field has passed). `anchor` is where interval schedules count from.
pub fn next_after(schedule: &Schedule, after: DateTime<Utc>, tz: Tz, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
    match schedule {
        Schedule::Rate { every, .. } => next_interval(*every, after, anchor),
        Schedule::Cron { cron, periodic, .. } => next_cron(cron, *periodic, after, tz),
    }
}

/// The latest firing in `(after, until]`: what a daemon that was down over that span missed last.
pub fn latest_missed(
    schedule: &Schedule,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
    tz: Tz,
    anchor: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    if let Schedule::Rate { every, .. } = schedule {
        let every_ms = i64::try_from(every.as_millis()).ok().filter(|ms| *ms > 0)?;
        let k = (until - anchor).num_milliseconds().div_euclid(every_ms);
        let t = anchor.checked_add_signed(Duration::milliseconds(k.checked_mul(every_ms)?))?;
        return (k >= 1 && t > after).then_some(t);
    }
    let mut last = None;
    let mut t = after;
    // Step through the missed firings; a long outage of a frequent schedule jumps to the end instead.
    for _ in 0..10_000 {
        match next_after(schedule, t, tz, anchor) {
            Some(n) if n <= until => {
                last = Some(n);
                t = n;
            }
            _ => return last,
        }
    }
    let Schedule::Cron { cron, .. } = schedule else { return last };
    cron.find_previous_occurrence(&until.with_timezone(&tz), true).ok().map(|t| t.with_timezone(&Utc)).or(last)
}

/// The shortest time between two consecutive firings of a cron schedule over its next `horizon`
/// after `from` (at most `max` firings looked at: a frequent schedule shows its shortest gap within
/// days), with the pair that has it. None for a rate (its gap is its interval) or fewer than two
/// firings.
pub fn shortest_gap(
    schedule: &Schedule,
    from: DateTime<Utc>,
    tz: Tz,
    horizon: Duration,
    max: usize,
) -> Option<(Duration, DateTime<Utc>, DateTime<Utc>)> {
    if let Schedule::Rate { .. } = schedule {
        return None;
    }
    let end = from + horizon;
    let mut best: Option<(Duration, DateTime<Utc>, DateTime<Utc>)> = None;
    let mut last = next_after(schedule, from, tz, from)?;
    for _ in 0..max {
        let Some(next) = next_after(schedule, last, tz, from).filter(|n| *n <= end) else { break };
        let gap = next - last;
        if best.is_none_or(|(g, _, _)| gap < g) {
            best = Some((gap, last, next));
        }
        last = next;
    }
    best
}

/// The next `n` firings after `after`.
pub fn upcoming(
    schedule: &Schedule,
    after: DateTime<Utc>,
    tz: Tz,
    anchor: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(n);
    let mut t = after;
    while out.len() < n {
        match next_after(schedule, t, tz, anchor) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// What a DST change between `prev` and `firing` (consecutive firings, or the instant listed from
/// and the first firing) did to this firing, in the words of the module's rules; None when the
/// offset did not change and `firing`'s wall time happens once.
pub fn dst_note(schedule: &Schedule, prev: DateTime<Utc>, firing: DateTime<Utc>, tz: Tz) -> Option<String> {
    let offset = |t: DateTime<Utc>| tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc() as i64;
    let (before, after) = (offset(prev), offset(firing));
    let local = firing.with_timezone(&tz);
    let hhmm = |secs: i64| format!("{}h{:02}", secs.abs() / 3600, secs.abs() % 3600 / 60);
    let change = (before != after).then(|| {
        // The instant of the change, to the minute: the offset moves once between two firings.
        let (mut lo, mut hi) = (prev, firing);
        while hi - lo > Duration::minutes(1) {
            let mid = lo + (hi - lo) / 2;
            if offset(mid) == before {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        let at = hi.with_timezone(&tz);
        let way = if after > before { "forward" } else { "back" };
        format!("DST: clocks went {way} {} at {}", hhmm(after - before), at.format("%Y-%m-%d %H:%M %Z"))
    });
    let Schedule::Cron { cron, periodic, .. } = schedule else {
        return change.map(|c| format!("{c}; a rate counts real time, so it did not move"));
    };
    let wall = Utc.from_utc_datetime(&local.naive_local());
    let repeated = matches!(tz.from_local_datetime(&local.naive_local()), LocalResult::Ambiguous(..));
    let policy = if repeated && *periodic {
        Some(format!("{} happens twice; a periodic schedule fires at both", local.format("%H:%M")))
    } else if repeated {
        Some(format!("{} happens twice; fires at the first only", local.format("%H:%M")))
    } else if after > before && !cron.is_time_matching(&wall).unwrap_or(true) {
        Some("its wall time did not exist that day: fired at the end of the gap".to_string())
    } else if after > before && *periodic {
        Some("the wall times in the gap were skipped: a periodic schedule keeps its real-time pace".to_string())
    } else {
        None
    };
    match (change, policy) {
        (Some(c), Some(p)) => Some(format!("{c}; {p}")),
        (c, p) => c.or(p),
    }
}

fn next_interval(every: std::time::Duration, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let every_ms = i64::try_from(every.as_millis()).ok().filter(|ms| *ms > 0)?;
    let elapsed = (after - anchor).num_milliseconds();
    let k = if elapsed < 0 { 1 } else { elapsed / every_ms + 1 };
    anchor.checked_add_signed(Duration::milliseconds(k.checked_mul(every_ms)?))
}

fn next_cron(cron: &croner::Cron, periodic: bool, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    // Wall-clock matches are searched from the earliest wall time any instant after `after` can
    // show: the local time of `after` under the smallest offset in force around it.
    let offset = |t: DateTime<Utc>| {
        Duration::seconds(tz.offset_from_utc_datetime(&t.naive_utc()).fix().local_minus_utc() as i64)
    };
    let low = [after - MAX_SHIFT, after, after + MAX_SHIFT].into_iter().map(offset).min()?;
    // Whole seconds: croner keeps a fraction it is given, and cron times have none.
    let mut wall = (after.naive_utc() + low).with_nanosecond(0)?;
    let mut best: Option<DateTime<Utc>> = None;
    // Bounded: each round moves `wall` past one match; a schedule matches at most every second.
    for _ in 0..100_000 {
        let m = cron.find_next_occurrence(&Utc.from_utc_datetime(&wall), true).ok()?.naive_utc();
        let (floor, first, second) = instants(m, tz, periodic);
        for c in [first, second].into_iter().flatten() {
            if c > after && best.is_none_or(|b| c < b) {
                best = Some(c);
            }
        }
        // `floor` (the earliest instant showing wall time m or later) only grows with m, and every
        // instant of a later match is at or after it: nothing later can beat `best`.
        if best.is_some_and(|b| floor >= b) {
            return best;
        }
        wall = m + Duration::seconds(1);
    }
    best
}

/// For a wall-clock match `m`: the earliest instant at or after wall time `m`, and the instants
/// the job fires at for `m` (see the module's DST rules).
fn instants(m: NaiveDateTime, tz: Tz, periodic: bool) -> (DateTime<Utc>, Option<DateTime<Utc>>, Option<DateTime<Utc>>) {
    let utc = |t: DateTime<Tz>| t.with_timezone(&Utc);
    match tz.from_local_datetime(&m) {
        LocalResult::Single(t) => (utc(t), Some(utc(t)), None),
        LocalResult::Ambiguous(a, b) => (utc(a), Some(utc(a)), periodic.then(|| utc(b))),
        LocalResult::None => {
            let after_gap = first_instant_after_gap(m, tz);
            (after_gap, (!periodic).then_some(after_gap), None)
        }
    }
}

/// The first instant whose wall time is later than the skipped wall time `m`: the end of the gap.
fn first_instant_after_gap(m: NaiveDateTime, tz: Tz) -> DateTime<Utc> {
    // Gaps start and end on whole minutes in every zone since 1970.
    let mut t = m;
    for _ in 0..=MAX_SHIFT.num_minutes() {
        t += Duration::minutes(1);
        if let Some(x) = tz.from_local_datetime(&t).earliest() {
            return x.with_timezone(&Utc);
        }
    }
    // Not reached for real zones: read `m` in the offset in force before the gap.
    let before = tz.offset_from_utc_datetime(&(m - MAX_SHIFT)).fix();
    Utc.from_utc_datetime(&(m - Duration::seconds(before.local_minus_utc() as i64)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn fires(expr: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        upcoming(&s, utc(after), tz, utc(after), n).into_iter().map(|t| t.with_timezone(&tz).to_rfc3339()).collect()
    }

    #[test]
    fn cron_in_utc() {
        let table: &[(&str, &str, &[&str])] = &[
            ("0 3 * * *", "2026-11-25T03:00:00Z", &["2026-11-26T03:00:00+00:00", "2026-11-27T03:00:00+00:00"]),
            ("*/20 * * * *", "2026-11-25T10:05:00Z", &["2026-11-25T10:20:00+00:00", "2026-11-25T10:40:00+00:00"]),
            ("@hourly", "2026-11-25T10:00:00Z", &["2026-11-25T11:00:00+00:00", "2026-11-25T12:00:00+00:00"]),
            ("@daily", "2026-12-31T23:59:59Z", &["2027-01-01T00:00:00+00:00", "2027-01-02T00:00:00+00:00"]),
            // EventBridge: ? in day-of-week, the last day of the month, the weekday nearest the 15th,
            // the second Tuesday (3#2, Sunday = 1), the last Friday (6L), a year range that ends.
            ("cron(0 12 * * ? *)", "2026-11-25T12:00:00Z", &["2026-11-26T12:00:00+00:00"]),
            ("cron(0 0 L * ? *)", "2026-11-25T00:00:00Z", &["2026-11-30T00:00:00+00:00", "2026-12-31T00:00:00+00:00"]),
            // 2026-11-15 is a Sunday: the nearest weekday is Monday the 16th. 2027-05-15 is a Saturday: Friday 14th.
            (
                "cron(0 9 15W * ? *)",
                "2026-11-01T00:00:00Z",
                &["2026-11-16T09:00:00+00:00", "2026-12-15T09:00:00+00:00"],
            ),
            (
                "cron(0 9 ? * 3#2 *)",
                "2026-11-25T00:00:00Z",
                &["2026-12-08T09:00:00+00:00", "2027-01-12T09:00:00+00:00"],
            ),
            (
                "cron(15 10 ? * 6L 2026)",
                "2026-11-01T00:00:00Z",
                &["2026-11-27T10:15:00+00:00", "2026-12-25T10:15:00+00:00"],
            ),
            (
                "cron(0/30 8-9 ? * MON-FRI *)",
                "2026-11-27T09:40:00Z",
                &["2026-11-30T08:00:00+00:00", "2026-11-30T08:30:00+00:00"],
            ),
        ];
        for (expr, after, want) in table {
            assert_eq!(fires(expr, "UTC", after, want.len()), *want, "{expr} after {after}");
        }
        // The year range ends: no more firings.
        assert_eq!(fires("cron(15 10 ? * 6L 2026)", "UTC", "2026-12-25T10:15:00Z", 1), Vec::<String>::new());
        assert_eq!(fires("cron(0 9 15W * ? *)", "UTC", "2027-05-01T00:00:00Z", 1), ["2027-05-14T09:00:00+00:00"]);
    }

    #[test]
    fn cron_in_a_time_zone_follows_its_offset_across_the_year() {
        // 03:00 in Berlin is 02:00Z in winter and 01:00Z in summer: never a fixed offset.
        let s = Schedule::parse("0 3 * * *").unwrap();
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let a = utc("2026-03-27T12:00:00Z");
        let got: Vec<_> = upcoming(&s, a, tz, a, 3).into_iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(got, ["2026-03-28T02:00:00+00:00", "2026-03-29T01:00:00+00:00", "2026-03-30T01:00:00+00:00"]);
    }

    fn notes(expr: &str, tz: &str, after: &str, n: usize) -> Vec<Option<String>> {
        let s = Schedule::parse(expr).unwrap();
        let tz: Tz = tz.parse().unwrap();
        let mut prev = utc(after);
        upcoming(&s, prev, tz, prev, n)
            .into_iter()
            .map(|t| std::mem::replace(&mut prev, t))
            .zip(upcoming(&s, utc(after), tz, utc(after), n))
            .map(|(p, t)| dst_note(&s, p, t, tz))
            .collect()
    }

    #[test]
    fn dst_notes_say_what_the_change_did() {
        // New York, 2026-03-08 02:00 EST becomes 03:00 EDT.
        let n = notes("30 2 * * *", "America/New_York", "2026-03-06T12:00:00Z", 3);
        assert_eq!((&n[0], &n[2]), (&None, &None));
        assert_eq!(
            n[1].as_deref(),
            Some("DST: clocks went forward 1h00 at 2026-03-08 03:00 EDT; its wall time did not exist that day: fired at the end of the gap")
        );
        let n = notes("*/30 * * * *", "America/New_York", "2026-03-08T06:40:00Z", 1);
        assert_eq!(
            n[0].as_deref(),
            Some("DST: clocks went forward 1h00 at 2026-03-08 03:00 EDT; the wall times in the gap were skipped: a periodic schedule keeps its real-time pace")
        );
        // 2026-11-01 02:00 EDT becomes 01:00 EST: 01:30 happens twice.
        let n = notes("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2);
        assert_eq!(n[0].as_deref(), Some("01:30 happens twice; fires at the first only"));
        assert_eq!(n[1].as_deref(), Some("DST: clocks went back 1h00 at 2026-11-01 01:00 EST"));
        let n = notes("30 * * * *", "America/New_York", "2026-11-01T05:00:00Z", 2);
        assert_eq!(n[0].as_deref(), Some("01:30 happens twice; a periodic schedule fires at both"));
        assert_eq!(
            n[1].as_deref(),
            Some("DST: clocks went back 1h00 at 2026-11-01 01:00 EST; 01:30 happens twice; a periodic schedule fires at both")
        );
        let n = notes("rate(1 hour)", "America/New_York", "2026-11-01T05:30:00Z", 1);
        assert_eq!(
            n[0].as_deref(),
            Some("DST: clocks went back 1h00 at 2026-11-01 01:00 EST; a rate counts real time, so it did not move")
        );
        assert_eq!(notes("0 12 * * *", "UTC", "2026-03-07T12:00:00Z", 3), [None, None, None]);
    }

    #[test]
    fn spring_forward_gap() {
        // Berlin, 2026-03-29: 02:00 CET becomes 03:00 CEST; 02:xx does not exist.
        // A fixed time in the gap fires at the end of the gap, once; the next day as usual.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00Z", 3),
            ["2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00", "2026-03-31T02:30:00+02:00"]
        );
        // A periodic schedule skips the missing wall times: still every 30 minutes of real time.
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:40:00Z", 3),
            ["2026-03-29T03:00:00+02:00", "2026-03-29T03:30:00+02:00", "2026-03-29T04:00:00+02:00"]
        );
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-03-29T00:10:00Z", 2),
            ["2026-03-29T01:30:00+01:00", "2026-03-29T03:00:00+02:00"]
        );
        // New York, 2026-03-08 02:00 EST becomes 03:00 EDT.
        assert_eq!(
            fires("15 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
            ["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]
        );
    }

    #[test]
    fn fall_back_repeat() {
        // Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET; 02:xx happens twice.
        // A fixed time fires once, at the first occurrence.
        assert_eq!(
            fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 2),
            ["2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]
        );
        // Starting inside the repeated hour, after the first 02:30: not again that night.
        assert_eq!(fires("30 2 * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 1), ["2026-10-26T02:30:00+01:00"]);
        // A periodic schedule fires at both occurrences: every 30 minutes of real time.
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-10-24T23:50:00Z", 5),
            [
                "2026-10-25T02:00:00+02:00",
                "2026-10-25T02:30:00+02:00",
                "2026-10-25T02:00:00+01:00",
                "2026-10-25T02:30:00+01:00",
                "2026-10-25T03:00:00+01:00"
            ]
        );
        // From inside the second pass of the repeated hour, the next is its next match, not the first pass's.
        assert_eq!(
            fires("*/30 * * * *", "Europe/Berlin", "2026-10-25T01:10:00Z", 2),
            ["2026-10-25T02:30:00+01:00", "2026-10-25T03:00:00+01:00"]
        );
    }

    #[test]
    fn intervals_count_from_the_anchor() {
        let s = Schedule::parse("rate(15 minutes)").unwrap();
        let anchor = utc("2026-11-25T10:07:00Z");
        let next = |after: &str| next_after(&s, utc(after), Tz::UTC, anchor).unwrap().to_rfc3339();
        assert_eq!(next("2026-11-25T10:07:00Z"), "2026-11-25T10:22:00+00:00");
        assert_eq!(next("2026-11-25T10:00:00Z"), "2026-11-25T10:22:00+00:00");
        assert_eq!(next("2026-11-25T10:21:59.999Z"), "2026-11-25T10:22:00+00:00");
        assert_eq!(next("2026-11-25T10:22:00Z"), "2026-11-25T10:37:00+00:00");
        assert_eq!(next("2026-11-26T10:07:30Z"), "2026-11-26T10:22:00+00:00");
        // A zone changes nothing for a rate: it is a span of real time.
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let s = Schedule::parse("rate(1 hour)").unwrap();
        let a = utc("2026-10-24T23:30:00Z");
        let got: Vec<_> = upcoming(&s, a, berlin, a, 3).into_iter().map(|t| t.to_rfc3339()).collect();
        assert_eq!(got, ["2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00", "2026-10-25T02:30:00+00:00"]);
        let s = Schedule::parse("@every 2s").unwrap();
        assert_eq!(next_after(&s, anchor, Tz::UTC, anchor), Some(anchor + Duration::seconds(2)));
    }

    #[test]
    fn latest_missed_firing() {
        let s = Schedule::parse("0 3 * * *").unwrap();
        let (after, until) = (utc("2026-11-20T03:00:00Z"), utc("2026-11-25T12:00:00Z"));
        assert_eq!(latest_missed(&s, after, until, Tz::UTC, after), Some(utc("2026-11-25T03:00:00Z")));
        // Down only between firings: nothing was missed.
        let (after, until) = (utc("2026-11-25T03:00:00Z"), utc("2026-11-25T12:00:00Z"));
        assert_eq!(latest_missed(&s, after, until, Tz::UTC, after), None);
        let s = Schedule::parse("rate(15 minutes)").unwrap();
        let last = utc("2026-11-25T10:00:00Z");
        assert_eq!(latest_missed(&s, last, utc("2026-11-25T10:14:59Z"), Tz::UTC, last), None);
        assert_eq!(
            latest_missed(&s, last, utc("2026-11-25T11:01:00Z"), Tz::UTC, last),
            Some(utc("2026-11-25T11:00:00Z"))
        );
        // A frequent schedule over a long outage: the last one, without stepping through each.
        let s = Schedule::parse("* * * * *").unwrap();
        let (after, until) = (utc("2026-01-01T00:00:00Z"), utc("2026-11-25T12:34:56Z"));
        assert_eq!(latest_missed(&s, after, until, Tz::UTC, after), Some(utc("2026-11-25T12:34:00Z")));
    }

    const EXPRS: &[&str] = &[
        "*/7 * * * *",
        "30 2 * * *",
        "0 1-3 * * *",
        "15 * * * *",
        "* 2 * * *",
        "0 0 29 2 *",
        "@daily",
        "cron(0/10 * ? * MON-FRI *)",
        "cron(0 2 L * ? *)",
        "cron(30 1 ? * 1#1 *)",
        "rate(5 minutes)",
        "@every 37s",
    ];
    const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        /// Firing times strictly increase, and no firing lies between a time and the next firing after it.
        #[test]
        fn firings_increase_and_none_is_skipped(
            e in 0..EXPRS.len(),
            z in 0..ZONES.len(),
            // 2024-01-01 .. 2030-01-01, to the second: crosses every DST change of those years.
            secs in 1_704_067_200i64..1_893_456_000i64,
            frac in 0.0f64..1.0,
        ) {
            let s = Schedule::parse(EXPRS[e]).unwrap();
            let tz: Tz = ZONES[z].parse().unwrap();
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            let anchor = t - Duration::seconds(secs % 977);
            let a = next_after(&s, t, tz, anchor).unwrap();
            prop_assert!(a > t);
            let b = next_after(&s, a, tz, anchor).unwrap();
            prop_assert!(b > a);
            // Any point between t and a has the same next firing: nothing was skipped.
            let between = t + Duration::milliseconds(((a - t).num_milliseconds() as f64 * frac) as i64);
            prop_assert_eq!(next_after(&s, between, tz, anchor), Some(a));
        }
    }

    #[test]
    fn shortest_gaps_of_crons() {
        let gap = |expr: &str, tz: &str| {
            let s = Schedule::parse(expr).unwrap();
            shortest_gap(&s, utc("2026-03-01T00:00:00Z"), tz.parse().unwrap(), Duration::days(366), 2000)
                .map(|(g, _, _)| g.num_minutes())
        };
        assert_eq!(gap("0,50 * * * *", "UTC"), Some(10));
        assert_eq!(gap("0 9,10 * * 1", "UTC"), Some(60));
        // Every 30 minutes stays every 30 minutes across DST; a daily 01:30 in New York is 23 h
        // apart on the day the clocks go forward.
        assert_eq!(gap("*/30 * * * *", "America/New_York"), Some(30));
        assert_eq!(gap("30 1 * * *", "America/New_York"), Some(23 * 60));
        // Once a year: no pair of firings within the horizon.
        assert_eq!(gap("59 23 31 12 *", "UTC"), None);
        assert_eq!(gap("rate(5 minutes)", "UTC"), None);
    }
}
