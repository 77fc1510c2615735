//! The schedule table: expressions from AWS's EventBridge documentation, Quartz's (whose grammar
//! EventBridge's is), crontab(5) and common Unix forms, each with its source and the firings that
//! follow an instant (UTC). Every EventBridge row's firings were also computed by Quartz 2.3.2's
//! `CronExpression` (Debian's libquartz2-java) and every Unix row's by croniter 2.0.7; they agreed
//! with the rows below. Sources:
//! - AWS EventBridge, Cron expressions reference:
//!   https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html
//!   (its examples table, and the examples in its description of each wildcard)
//! - Quartz CronTrigger tutorial: https://www.quartz-scheduler.org/documentation/quartz-2.3.0/tutorials/crontrigger.html
//!   (its examples, written here in EventBridge's six fields: without Quartz's seconds)
//! - crontab(5) of cronie, its EXAMPLE CRON FILE
//! - opsd's own rows: ranges that wrap (hours across midnight, days of the week across Sunday,
//!   months across the new year, days across the month's end), year lists, ranges and steps, and
//!   the specials at month boundaries.

use super::calendar::upcoming;
use super::schedule::Schedule;
use chrono::{DateTime, Utc};

/// (source, expression, after, the next firings, whether the schedule ends after them)
type Row = (&'static str, &'static str, &'static str, &'static [&'static str], bool);

const VALID: &[Row] = &[
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0 10 * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T10:00:00Z", "2026-03-08T10:00:00Z", "2026-03-09T10:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(15 12 * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T12:15:00Z", "2026-03-07T12:15:00Z", "2026-03-08T12:15:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0 18 ? * MON-FRI *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T18:00:00Z", "2026-03-09T18:00:00Z", "2026-03-10T18:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0 8 1 * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-04-01T08:00:00Z", "2026-05-01T08:00:00Z", "2026-06-01T08:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/15 * * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T12:15:00Z", "2026-03-06T12:30:00Z", "2026-03-06T12:45:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/10 * ? * MON-FRI *)",
        "2026-03-06T23:45:00Z",
        &["2026-03-06T23:50:00Z", "2026-03-09T00:00:00Z", "2026-03-09T00:10:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/5 8-17 ? * MON-FRI *)",
        "2026-03-06T17:50:00Z",
        &["2026-03-06T17:55:00Z", "2026-03-09T08:00:00Z", "2026-03-09T08:05:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/30 20-2 ? * MON-FRI *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T20:00:00Z", "2026-03-06T20:30:00Z", "2026-03-06T21:00:00Z", "2026-03-06T21:30:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/30 20-2 ? * MON-FRI *)",
        "2026-03-07T01:00:00Z",
        &["2026-03-09T00:00:00Z", "2026-03-09T00:30:00Z", "2026-03-09T01:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: examples",
        "cron(0/30 20-2 ? * MON-FRI *)",
        "2026-03-09T01:45:00Z",
        &["2026-03-09T02:00:00Z", "2026-03-09T02:30:00Z", "2026-03-09T20:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 1 JAN,FEB,MAR ? *)",
        "2026-03-06T12:00:00Z",
        &["2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z", "2027-03-01T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 1-15 * ? *)",
        "2026-03-14T12:00:00Z",
        &["2026-03-15T00:00:00Z", "2026-04-01T00:00:00Z", "2026-04-02T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(1/10 * * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T12:01:00Z", "2026-03-06T12:11:00Z", "2026-03-06T12:21:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 7 * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T00:00:00Z", "2026-04-07T00:00:00Z", "2026-05-07T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 3W * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-04-03T00:00:00Z", "2026-05-04T00:00:00Z", "2026-06-03T00:00:00Z", "2026-07-03T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 ? * 3#2 *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-10T00:00:00Z", "2026-04-14T00:00:00Z", "2026-05-12T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 L * ? *)",
        "2026-01-31T12:00:00Z",
        &["2026-02-28T00:00:00Z", "2026-03-31T00:00:00Z", "2026-04-30T00:00:00Z"],
        false,
    ),
    (
        "AWS EventBridge, Cron expressions reference: wildcards",
        "cron(0 0 ? * L *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T00:00:00Z", "2026-03-14T00:00:00Z"],
        false,
    ),
    ("opsd: wrapping ranges, years, specials", "cron(15 10 ? * 6L 2022-2023)", "2026-03-06T12:00:00Z", &[], true),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(15 10 ? * 6L 2026-2027)",
        "2026-11-01T00:00:00Z",
        &["2026-11-27T10:15:00Z", "2026-12-25T10:15:00Z", "2027-01-29T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0 12 * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T12:00:00Z", "2026-03-08T12:00:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 ? * * *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T10:15:00Z", "2026-03-08T10:15:00Z"],
        false,
    ),
    ("Quartz 2.3 CronTrigger tutorial: examples", "cron(15 10 * * ? 2005)", "2026-03-06T12:00:00Z", &[], true),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(* 14 * * ? *)",
        "2026-03-06T14:58:00Z",
        &["2026-03-06T14:59:00Z", "2026-03-07T14:00:00Z", "2026-03-07T14:01:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0/5 14 * * ? *)",
        "2026-03-06T14:50:00Z",
        &["2026-03-06T14:55:00Z", "2026-03-07T14:00:00Z", "2026-03-07T14:05:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0/5 14,18 * * ? *)",
        "2026-03-06T14:50:00Z",
        &["2026-03-06T14:55:00Z", "2026-03-06T18:00:00Z", "2026-03-06T18:05:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0-5 14 * * ? *)",
        "2026-03-06T14:04:00Z",
        &["2026-03-06T14:05:00Z", "2026-03-07T14:00:00Z", "2026-03-07T14:01:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(10,44 14 ? 3 WED *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-11T14:10:00Z", "2026-03-11T14:44:00Z", "2026-03-18T14:10:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 ? * MON-FRI *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-09T10:15:00Z", "2026-03-10T10:15:00Z", "2026-03-11T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 15 * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-15T10:15:00Z", "2026-04-15T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 L * ? *)",
        "2026-02-01T00:00:00Z",
        &["2026-02-28T10:15:00Z", "2026-03-31T10:15:00Z", "2026-04-30T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 ? * 6L *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-27T10:15:00Z", "2026-04-24T10:15:00Z", "2026-05-29T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(15 10 ? * 6#3 *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-20T10:15:00Z", "2026-04-17T10:15:00Z", "2026-05-15T10:15:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0 12 1/5 * ? *)",
        "2026-03-25T12:00:00Z",
        &["2026-03-26T12:00:00Z", "2026-03-31T12:00:00Z", "2026-04-01T12:00:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(11 11 11 11 ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-11-11T11:11:00Z", "2027-11-11T11:11:00Z"],
        false,
    ),
    (
        "Quartz 2.3 CronTrigger tutorial: examples",
        "cron(0 9 ? * FRI-MON *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T09:00:00Z", "2026-03-08T09:00:00Z", "2026-03-09T09:00:00Z", "2026-03-13T09:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 9 ? * 6-2 *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T09:00:00Z", "2026-03-08T09:00:00Z", "2026-03-09T09:00:00Z", "2026-03-13T09:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 1 NOV-FEB ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2027-02-01T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(50-10/10 * * * ? *)",
        "2026-03-06T12:15:00Z",
        &["2026-03-06T12:50:00Z", "2026-03-06T13:00:00Z", "2026-03-06T13:10:00Z", "2026-03-06T13:50:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 28-3 * ? *)",
        "2026-02-26T12:00:00Z",
        &[
            "2026-02-28T00:00:00Z",
            "2026-03-01T00:00:00Z",
            "2026-03-02T00:00:00Z",
            "2026-03-03T00:00:00Z",
            "2026-03-28T00:00:00Z",
        ],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 22-4/2 * * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T22:00:00Z", "2026-03-07T00:00:00Z", "2026-03-07T02:00:00Z", "2026-03-07T04:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 1 1 ? 2027,2029)",
        "2026-03-06T12:00:00Z",
        &["2027-01-01T00:00:00Z", "2029-01-01T00:00:00Z"],
        true,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 1 1 ? 2027-2028)",
        "2026-03-06T12:00:00Z",
        &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
        true,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 12 1 1 ? 2030/5)",
        "2026-03-06T12:00:00Z",
        &["2030-01-01T12:00:00Z", "2035-01-01T12:00:00Z", "2040-01-01T12:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 29 2 ? *)",
        "2026-03-06T12:00:00Z",
        &["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 31 * ? *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-31T00:00:00Z", "2026-05-31T00:00:00Z", "2026-07-31T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 1W * ? *)",
        "2026-02-06T12:00:00Z",
        &["2026-03-02T00:00:00Z", "2026-04-01T00:00:00Z", "2026-05-01T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 ? * 1L *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-29T00:00:00Z", "2026-04-26T00:00:00Z", "2026-05-31T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 ? * 2#5 *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-30T00:00:00Z", "2026-06-29T00:00:00Z", "2026-08-31T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 9 ? * mon-fri *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-09T09:00:00Z", "2026-03-10T09:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(*/20 * * * ? *)",
        "2026-03-06T12:05:00Z",
        &["2026-03-06T12:20:00Z", "2026-03-06T12:40:00Z", "2026-03-06T13:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 ? * SUN,SAT *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T00:00:00Z", "2026-03-08T00:00:00Z", "2026-03-14T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 6 ? * 2,4,6 *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-09T06:00:00Z", "2026-03-11T06:00:00Z", "2026-03-13T06:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 23 L * ? *)",
        "2026-02-01T00:00:00Z",
        &["2026-02-28T23:00:00Z", "2026-03-31T23:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 1 1 ? 2027)",
        "2026-03-06T12:00:00Z",
        &["2027-01-01T00:00:00Z"],
        true,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0 ? * MON#1 *)",
        "2026-03-06T12:00:00Z",
        &["2026-04-06T00:00:00Z", "2026-05-04T00:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(30 9 15W * ? *)",
        "2026-03-01T00:00:00Z",
        &["2026-03-16T09:30:00Z", "2026-04-15T09:30:00Z", "2026-05-15T09:30:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 0/6 ? * SAT-SUN *)",
        "2026-03-06T12:00:00Z",
        &["2026-03-07T00:00:00Z", "2026-03-07T06:00:00Z", "2026-03-07T12:00:00Z", "2026-03-07T18:00:00Z"],
        false,
    ),
    (
        "opsd: wrapping ranges, years, specials",
        "cron(0 2 ? * SUN 2026)",
        "2026-12-20T00:00:00Z",
        &["2026-12-20T02:00:00Z", "2026-12-27T02:00:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "*/5 * * * *",
        "2026-03-06T12:02:00Z",
        &["2026-03-06T12:05:00Z", "2026-03-06T12:10:00Z", "2026-03-06T12:15:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 0 * * 0",
        "2026-03-06T12:00:00Z",
        &["2026-03-08T00:00:00Z", "2026-03-15T00:00:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 0 * * 7",
        "2026-03-06T12:00:00Z",
        &["2026-03-08T00:00:00Z", "2026-03-15T00:00:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 9 * * 1-5",
        "2026-03-06T12:00:00Z",
        &["2026-03-09T09:00:00Z", "2026-03-10T09:00:00Z", "2026-03-11T09:00:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "30 4 1,15 * 5",
        "2026-03-06T12:00:00Z",
        &["2026-03-13T04:30:00Z", "2026-03-15T04:30:00Z", "2026-03-20T04:30:00Z", "2026-03-27T04:30:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 */2 * * *",
        "2026-03-06T12:30:00Z",
        &["2026-03-06T14:00:00Z", "2026-03-06T16:00:00Z", "2026-03-06T18:00:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "5 0 * 8 *",
        "2026-03-06T12:00:00Z",
        &["2026-08-01T00:05:00Z", "2026-08-02T00:05:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "15 14 1 * *",
        "2026-03-06T12:00:00Z",
        &["2026-04-01T14:15:00Z", "2026-05-01T14:15:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "0 22 * * 1-5",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T22:00:00Z", "2026-03-09T22:00:00Z", "2026-03-10T22:00:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "23 0-23/2 * * *",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T12:23:00Z", "2026-03-06T14:23:00Z", "2026-03-06T16:23:00Z"],
        false,
    ),
    (
        "crontab(5) (cronie): examples",
        "5 4 * * sun",
        "2026-03-06T12:00:00Z",
        &["2026-03-08T04:05:00Z", "2026-03-15T04:05:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 0 1 1 *",
        "2026-03-06T12:00:00Z",
        &["2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "0 12 * jan-mar mon",
        "2026-03-06T12:00:00Z",
        &["2026-03-09T12:00:00Z", "2026-03-16T12:00:00Z", "2026-03-23T12:00:00Z"],
        false,
    ),
    (
        "Unix cron: common forms",
        "1-59/2 * * * *",
        "2026-03-06T12:00:00Z",
        &["2026-03-06T12:01:00Z", "2026-03-06T12:03:00Z", "2026-03-06T12:05:00Z"],
        false,
    ),
];

/// Expressions AWS documents as invalid (and the other rules its grammar states), with the words
/// opsd's message must contain: the field and the rule.
const INVALID: &[(&str, &str, &str)] = &[
    ("AWS: * in both day fields", "cron(0 12 * * * *)", "cannot both be set; put ? in one of them"),
    ("AWS: a value in both day fields", "cron(0 18 1 * MON-FRI *)", "cannot both be set"),
    ("AWS: ? in both day fields", "cron(0 12 ? * ? *)", "only one of day-of-month and day-of-week may be ?"),
    ("AWS: more than one # expression", "cron(0 0 ? * 3#1,6#3 *)", "with # the field takes one expression only"),
    ("AWS: years are 1970-2199", "cron(0 0 1 1 ? 1969)", "the year field \"1969\": 1969 is out of range"),
    ("AWS: years are 1970-2199", "cron(0 0 1 1 ? 2200)", "the year field \"2200\": 2200 is out of range"),
    ("AWS: six fields, no seconds", "cron(0 0 12 * * ? *)", "has seven fields; EventBridge cron takes six"),
    ("AWS: six fields", "cron(0 12 * *)", "has 4 fields; EventBridge cron takes six"),
    ("Unix cron: five fields", "0 0 3 * * *", "has six fields; Unix cron takes five"),
    (
        "AWS: minutes 0-59",
        "cron(60 * * * ? *)",
        "the minutes field \"60\": 60 is out of range; minutes run from 0 to 59",
    ),
    ("AWS: hours 0-23", "cron(0 24 * * ? *)", "the hours field \"24\": 24 is out of range; hours run from 0 to 23"),
    ("AWS: day-of-month 1-31", "cron(0 0 32 * ? *)", "the day-of-month field \"32\": 32 is out of range"),
    ("AWS: month 1-12 or JAN-DEC", "cron(0 0 1 13 ? *)", "month run from 1 to 12 or JAN-DEC"),
    ("AWS: day-of-week 1-7 (0 is Unix's Sunday)", "cron(0 0 ? * 0 *)", "day-of-week run from 1 to 7 or SUN-SAT"),
    ("AWS: day-of-week 1-7", "cron(0 0 ? * 8 *)", "the day-of-week field \"8\": 8 is out of range"),
    ("AWS: no / in day-of-week", "cron(0 0 ? * 2/2 *)", "no / (step) in day-of-week"),
    ("AWS: # counts weeks 1-5", "cron(0 0 ? * 3#6 *)", "which week of the month, 1 to 5"),
    ("AWS: W only in day-of-month", "cron(0 0 ? * 3W *)", "the day-of-week field \"3W\""),
    ("AWS: L only in the day fields", "cron(L 0 * * ? *)", "only allowed in day-of-month"),
    ("AWS: ? only in the day fields", "cron(0 ? * * ? *)", "? is only allowed in day-of-month or day-of-week"),
    (
        "Quartz's LW is not EventBridge's",
        "cron(0 0 LW * ? *)",
        "LW (Quartz's last weekday of the month) is not in EventBridge's cron grammar",
    ),
    (
        "Quartz's L-n is not EventBridge's",
        "cron(15 10 L-2 * ? *)",
        "L-n (Quartz's n days before the last) is not in EventBridge's cron grammar",
    ),
    ("years do not wrap", "cron(0 0 1 1 ? 2030-2026)", "years do not wrap"),
    ("a step within the field", "cron(0/60 * * * ? *)", "the step after / must be a whole number from 1 to 59"),
    ("Unix cron: no EventBridge wildcards", "0 0 L * *", "L is EventBridge's, not Unix cron's"),
    ("Unix cron: ranges do not wrap", "0 22-2 * * *", "the range 22-2 goes backwards"),
];

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn the_table_has_enough_cited_rows() {
    assert!(VALID.len() + INVALID.len() >= 60, "{} rows", VALID.len() + INVALID.len());
    assert!(VALID.len() >= 60, "{} valid rows", VALID.len());
    assert!(VALID.iter().all(|r| !r.0.is_empty()) && INVALID.iter().all(|r| !r.0.is_empty()));
}

#[test]
fn every_documented_expression_fires_as_documented() {
    let mut wrong = Vec::new();
    for (source, expr, after, want, ends) in VALID {
        let schedule = match Schedule::parse(expr) {
            Ok(s) => s,
            Err(e) => {
                wrong.push(format!("{expr} ({source}) was refused: {e}"));
                continue;
            }
        };
        let a = utc(after);
        // One more than listed: a schedule that ends must have no further firing.
        let got: Vec<String> = upcoming(&schedule, a, chrono_tz::UTC, a, want.len() + usize::from(*ends))
            .into_iter()
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .collect();
        if got != *want {
            wrong.push(format!("{expr} ({source}) after {after}: got {got:?}, want {want:?}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn every_documented_invalid_expression_is_refused_with_the_field_and_the_rule() {
    let mut wrong = Vec::new();
    for (source, expr, words) in INVALID {
        match Schedule::parse(expr) {
            Ok(_) => wrong.push(format!("{expr} ({source}) was accepted")),
            Err(e) if !e.contains(words) => wrong.push(format!("{expr} ({source}): {e:?} does not say {words:?}")),
            Err(e) if e.contains("rror:") => wrong.push(format!("{expr} ({source}): the parser's words leak: {e}")),
            Err(_) => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}
