use super::*;

fn at(text: &str) -> Timestamp {
    text.parse().expect("timestamp")
}

fn windows(specs: &[&str]) -> Windows {
    Windows::parse(specs).expect("windows")
}

#[test]
fn a_weekly_window_is_open_on_its_day_in_its_zone() {
    let saturday = windows(&["Sat 02:00-04:00 Europe/Berlin"]);
    // 2026-12-05 is a Saturday; Berlin is UTC+1 in December.
    assert_eq!(
        saturday.standing(at("2026-12-05T01:30:00Z")),
        Standing::Open {
            closes: at("2026-12-05T03:00:00Z")
        }
    );
    assert_eq!(
        saturday.standing(at("2026-12-04T12:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-12-05T01:00:00Z"))
        }
    );
    assert_eq!(
        saturday.standing(at("2026-12-05T03:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-12-12T01:00:00Z"))
        },
        "the end is not part of it"
    );
}

#[test]
fn a_window_that_ends_before_it_starts_runs_past_midnight() {
    let nights = windows(&["Mon-Fri 22:00-02:00 UTC"]);
    // 2026-12-08 is a Tuesday: Monday's night is still open at 01:00.
    assert_eq!(
        nights.standing(at("2026-12-08T01:00:00Z")),
        Standing::Open {
            closes: at("2026-12-08T02:00:00Z")
        }
    );
    // Saturday 01:00 is Friday's night; Sunday 01:00 is nobody's.
    assert!(matches!(
        nights.standing(at("2026-12-12T01:00:00Z")),
        Standing::Open { .. }
    ));
    assert_eq!(
        nights.standing(at("2026-12-13T01:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-12-14T22:00:00Z"))
        }
    );
    let weekend = windows(&["Fri-Mon 10:00-11:00 UTC"]);
    assert!(matches!(
        weekend.standing(at("2026-12-13T10:30:00Z")),
        Standing::Open { .. }
    ));
    assert!(matches!(
        weekend.standing(at("2026-12-09T10:30:00Z")),
        Standing::Closed { .. }
    ));
}

#[test]
fn windows_follow_the_wall_clock_across_daylight_saving_changes() {
    // 2026-03-29: Berlin's clocks jump from 02:00 to 03:00. 02:30 does not exist that day.
    let spring = windows(&["Sun 02:30-04:00 Europe/Berlin"]);
    assert_eq!(
        spring.standing(at("2026-03-29T00:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-03-29T01:30:00Z"))
        },
        "opens at 03:30 CEST: the skipped 02:30 moved forward by the jump"
    );
    assert_eq!(
        spring.standing(at("2026-03-29T01:45:00Z")),
        Standing::Open {
            closes: at("2026-03-29T02:00:00Z")
        },
        "closes at 04:00 CEST: half an hour that night"
    );
    // The week before, on CET, the same window lasts an hour and a half.
    assert_eq!(
        spring.standing(at("2026-03-22T01:30:00Z")),
        Standing::Open {
            closes: at("2026-03-22T03:00:00Z")
        }
    );
    // 2026-10-25: clocks go back from 03:00 CEST to 02:00 CET; 01:00-04:00 lasts four hours.
    let autumn = windows(&["Sun 01:00-04:00 Europe/Berlin"]);
    assert_eq!(
        autumn.standing(at("2026-10-25T00:00:00Z")),
        Standing::Open {
            closes: at("2026-10-25T03:00:00Z")
        }
    );
    assert!(matches!(
        autumn.standing(at("2026-10-24T22:59:59Z")),
        Standing::Closed { .. }
    ));
    // The next week, on CET: 01:00 is midnight UTC.
    assert_eq!(
        autumn.standing(at("2026-10-25T03:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-11-01T00:00:00Z"))
        }
    );
}

#[test]
fn a_one_off_window_opens_once() {
    let christmas = windows(&["2026-12-24T01:00/2h UTC"]);
    assert_eq!(
        christmas.standing(at("2026-12-23T00:00:00Z")),
        Standing::Closed {
            opens: Some(at("2026-12-24T01:00:00Z"))
        }
    );
    assert_eq!(
        christmas.standing(at("2026-12-24T02:59:59Z")),
        Standing::Open {
            closes: at("2026-12-24T03:00:00Z")
        }
    );
    assert_eq!(
        christmas.standing(at("2026-12-24T03:00:00Z")),
        Standing::Closed { opens: None },
        "never again"
    );
    let seconds = windows(&["2026-12-24T01:00:05/20s Asia/Tokyo"]);
    assert_eq!(
        seconds.standing(at("2026-12-23T16:00:10Z")),
        Standing::Open {
            closes: at("2026-12-23T16:00:25Z")
        }
    );
}

#[test]
fn adjoining_windows_are_one_opening_and_none_means_unrestricted() {
    let late = windows(&["daily 22:00-23:00 UTC", "daily 23:00-01:00 UTC"]);
    assert_eq!(
        late.standing(at("2026-12-04T22:30:00Z")),
        Standing::Open {
            closes: at("2026-12-05T01:00:00Z")
        }
    );
    assert_eq!(
        Windows::default().standing(at("2026-12-04T22:30:00Z")),
        Standing::Unrestricted
    );
}

#[test]
fn a_window_that_cannot_be_read_says_what_is_wrong() {
    let problem = |spec: &str| Window::parse(spec).expect_err(spec).problem;
    assert_eq!(
        problem("Sat 02:00-04:00 Mars/Olympus"),
        "\"Mars/Olympus\" is not a time zone of the IANA database (e.g. Europe/Berlin, UTC)"
    );
    assert_eq!(
        problem("Sxt 02:00-04:00 UTC"),
        "\"Sxt\" is not a day (Mon … Sun, or daily)"
    );
    assert_eq!(
        problem("Sat 02:00 UTC"),
        "\"02:00\" is not a range like 02:00-04:00"
    );
    assert_eq!(
        problem("Sat 25:00-04:00 UTC"),
        "\"25:00\" is not a time like 02:00"
    );
    assert_eq!(problem("2026-12-24T01:00/0s UTC"), "its length is zero");
    assert_eq!(
        problem("2026-12-24T01:00 UTC"),
        "\"2026-12-24T01:00\" has no `/<length>` after its start"
    );
    let whole = Window::parse("tomorrow").expect_err("nonsense").to_string();
    assert!(
        whole.starts_with("window \"tomorrow\": expected"),
        "{whole}"
    );
    assert!(
        whole.contains("\"Sat 02:00-04:00 Europe/Berlin\""),
        "{whole}"
    );
}

#[test]
fn time_until_reads_in_the_largest_units() {
    let now = at("2026-12-04T00:00:00Z");
    let until = |then: &str| humane_until(now, at(then));
    assert_eq!(until("2026-12-04T00:00:45Z"), "45s");
    assert_eq!(until("2026-12-04T00:12:00Z"), "12m");
    assert_eq!(until("2026-12-04T03:12:00Z"), "3h12m");
    assert_eq!(until("2026-12-06T05:00:00Z"), "2d5h");
    assert_eq!(until("2026-12-03T00:00:00Z"), "0s");
}

#[test]
fn a_start_reads_as_rfc_3339_or_a_wall_clock_time_in_a_zone() {
    assert_eq!(
        parse_instant("2026-12-24T01:00:00Z"),
        Ok(at("2026-12-24T01:00:00Z"))
    );
    assert_eq!(
        parse_instant("2026-12-24T01:00 Europe/Berlin"),
        Ok(at("2026-12-24T00:00:00Z"))
    );
    assert!(
        parse_instant("tomorrow")
            .expect_err("nonsense")
            .contains("is not a time")
    );
    assert!(
        parse_instant("2026-12-24T01:00 Mars/Olympus")
            .expect_err("no such zone")
            .contains("IANA")
    );
}
