"""apps.schedules.cron: parsing, next times, and cron(8)'s daylight-saving rules.

Plain functions, no database. Local times read "YYYY-MM-DD HH:MM+offset"."""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from apps.schedules.cron import Cron, CronError, cron_next, cron_parse, cron_times, tz_parse

PARIS = tz_parse("Europe/Paris")
NEW_YORK = tz_parse("America/New_York")
LORD_HOWE = tz_parse("Australia/Lord_Howe")
UTC_ZONE = tz_parse("UTC")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_times(expression: str, tz: ZoneInfo, after: datetime, count: int) -> list[str]:
    """The next firings as local wall-clock times with their offset."""
    found = cron_times(cron_parse(expression), after=after, tz=tz, count=count)
    return [t.astimezone(tz).isoformat(sep=" ", timespec="minutes") for t in found]


def utc_times(expression: str, tz: ZoneInfo, after: datetime, count: int) -> list[str]:
    found = cron_times(cron_parse(expression), after=after, tz=tz, count=count)
    return [t.isoformat(sep=" ", timespec="minutes") for t in found]


# --- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(("field", "values"), [
    ("*", set(range(60))),
    ("7", {7}),
    ("1-3", {1, 2, 3}),
    ("*/15", {0, 15, 30, 45}),
    ("10-20/5", {10, 15, 20}),
    ("50/3", {50, 53, 56, 59}),
    ("1,5,7-9,*/30", {0, 1, 5, 7, 8, 9, 30}),
    ("05", {5}),
])
def test_every_field_syntax_expands_to_its_values(field: str, values: set[int]) -> None:
    assert cron_parse(f"{field} 0 * * *").minutes == values


def test_the_other_fields_have_their_own_ranges() -> None:
    cron = cron_parse("0 */6 */10 */4 */2")
    assert cron.hours == {0, 6, 12, 18}
    assert cron.days == {1, 11, 21, 31}
    assert cron.months == {1, 5, 9}
    assert cron.weekdays == {0, 2, 4, 6}


def test_month_and_weekday_names_work_in_any_case_and_in_ranges() -> None:
    cron = cron_parse("0 0 * jan-MAR,Dec Mon-Fri")
    assert cron.months == {1, 2, 3, 12}
    assert cron.weekdays == {1, 2, 3, 4, 5}
    assert cron_parse("0 0 * * sat,SUN").weekdays == {0, 6}
    assert cron_parse("0 0 * jun/2 *").months == {6, 8, 10, 12}


def test_day_of_week_7_is_sunday_too() -> None:
    assert cron_parse("0 0 * * 7").weekdays == {0}
    assert cron_parse("0 0 * * 5-7").weekdays == {5, 6, 0}
    assert cron_parse("0 0 * * fri-sun").weekdays == {5, 6, 0}
    assert cron_parse("0 0 * * mon-sun").weekdays == set(range(7))
    assert cron_parse("0 0 * * 1/2").weekdays == {1, 3, 5}  # a/n ends at Saturday, not at 7


def test_restriction_flags_say_whether_a_field_starts_with_a_star() -> None:
    cron = cron_parse("0 8 * * 1-5")
    assert (cron.day_restricted, cron.weekday_restricted, cron.wildcard_time) == (False, True, False)
    cron = cron_parse("0 8 */2 * 1")
    assert (cron.day_restricted, cron.weekday_restricted) == (False, True)
    assert cron_parse("0 8 1 * *").day_restricted
    assert cron_parse("*/15 8 * * *").wildcard_time
    assert cron_parse("15 */2 * * *").wildcard_time
    assert not cron_parse("0-59 0-23 * * *").wildcard_time  # explicit ranges are fixed times


@pytest.mark.parametrize(("macro", "expanded"), [
    ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"), ("@DAILY", "0 0 * * *"),
])
def test_macros_mean_their_five_fields(macro: str, expanded: str) -> None:
    parsed, expected = cron_parse(macro), cron_parse(expanded)
    assert parsed.expression == macro
    assert {**vars(parsed), "expression": ""} == {**vars(expected), "expression": ""}


def test_hourly_is_a_wildcard_job_and_daily_is_not() -> None:
    assert cron_parse("@hourly").wildcard_time
    assert not cron_parse("@daily").wildcard_time


def test_the_expression_is_kept_as_given_but_stripped() -> None:
    cron = cron_parse("  0  8\t* *  1-5 \n")
    assert cron.expression == "0  8\t* *  1-5"
    assert isinstance(cron, Cron)


@pytest.mark.parametrize(("expression", "message"), [
    ("61 * * * *", "minute field: 61 is out of range 0-59"),
    ("* 24 * * *", "hour field: 24 is out of range 0-23"),
    ("* * 0 * *", "day-of-month field: 0 is out of range 1-31"),
    ("* * 32 * *", "day-of-month field: 32 is out of range 1-31"),
    ("* * * 13 *", "month field: 13 is out of range 1-12"),
    ("* * * * 8", "day-of-week field: 8 is out of range 0-7"),
    ("*/0 * * * *", "minute field: step 0 in '*/0' never advances"),
    ("* * * 1-12/0 *", "month field: step 0"),
    ("*/x * * * *", "minute field: step 'x' in '*/x' is not a number"),
    ("1/2/3 * * * *", "minute field: step '2/3'"),
    ("* */ * * *", "hour field: step ''"),
    ("* 5-1 * * *", "hour field: range '5-1' is reversed"),
    ("* * * * fri-mon", "day-of-week field: range 'fri-mon' is reversed"),
    ("1,,2 * * * *", "minute field: empty item in '1,,2'"),
    ("1, * * * *", "minute field: empty item"),
    ("* * * * mon-", "day-of-week field: 'mon-' is missing a number"),
    ("-5 * * * *", "minute field: '-5' is missing a number"),
    ("1-2-3 * * * *", "minute field: '2-3' is not a number"),
    ("* * * foo *", "month field: 'foo' is not a number or a name (jan-dec)"),
    ("* * * * sunday", "day-of-week field: 'sunday' is not a number or a name (sun-sat)"),
    ("mon * * * *", "minute field: 'mon' is not a number"),
    ("\u00b2 * * * *", "minute field: '\u00b2' is not a number"),
    ("*-5 * * * *", "minute field: '*' is not a number"),
])
def test_a_bad_field_is_rejected_with_a_reason_naming_it(expression: str, message: str) -> None:
    with pytest.raises(CronError) as raised:
        cron_parse(expression)
    assert message in str(raised.value)


@pytest.mark.parametrize(("expression", "message"), [
    ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"),
    ("0 0 * * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
    ("", "empty expression"),
    ("   ", "empty expression"),
    ("@reboot", "@reboot is not supported"),
    ("@fortnightly", "unknown macro '@fortnightly'"),
    ("@daily 0", "unknown macro"),
])
def test_a_malformed_expression_is_rejected(expression: str, message: str) -> None:
    with pytest.raises(CronError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        cron_parse(expression)


def test_cron_error_is_a_value_error() -> None:
    assert issubclass(CronError, ValueError)


@pytest.mark.parametrize("expression", ["0 0 31 2 *", "0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 30,31 feb *"])
def test_an_expression_that_never_fires_is_rejected(expression: str) -> None:
    with pytest.raises(CronError, match="never fires"):
        cron_parse(expression)


def test_a_day_that_does_not_exist_fires_when_a_weekday_may_match_instead() -> None:
    # both day fields restricted: the 31st of February never comes, Mondays in February do
    assert utc_times("0 0 31 2 mon", UTC_ZONE, utc(2027, 1, 1), 1) == ["2027-02-01 00:00+00:00"]


# --- next times ----------------------------------------------------------------------------


def test_the_leap_day_is_valid_and_fires_only_in_leap_years() -> None:
    assert utc_times("0 0 29 2 *", UTC_ZONE, utc(2027, 1, 1), 3) == [
        "2028-02-29 00:00+00:00", "2032-02-29 00:00+00:00", "2036-02-29 00:00+00:00"]


def test_a_rare_combination_is_valid_and_always_has_a_next_time() -> None:
    cron = cron_parse("0 0 */31 2 1")  # 1 February when it is a Monday: 2027, 2038, 2044, 2049, 2055
    assert cron_next(cron, after=utc(2027, 1, 1), tz=UTC_ZONE) == utc(2027, 2, 1)
    assert cron_next(cron, after=utc(2027, 2, 2), tz=UTC_ZONE) == utc(2038, 2, 1)  # 11 years on
    assert cron_times(cron, after=utc(2027, 2, 2), tz=UTC_ZONE, count=4) == [
        utc(2038, 2, 1), utc(2044, 2, 1), utc(2049, 2, 1), utc(2055, 2, 1)]


@pytest.mark.parametrize("weekday", range(7))
def test_any_date_on_any_weekday_has_a_next_time_from_any_day(weekday: int) -> None:
    """What cron_parse accepts has a next time: 28 years hold every date on every weekday."""
    cron = cron_parse(f"0 0 */28 2 {weekday}")  # February 1 or 29 on that weekday
    for year in range(2026, 2034):
        upcoming = cron_next(cron, after=utc(year, 3, 1), tz=UTC_ZONE)
        assert upcoming is not None and upcoming.month == 2 and upcoming.day in (1, 29)
        assert (upcoming.weekday() + 1) % 7 == weekday


def test_both_day_fields_restricted_match_when_either_does() -> None:
    # September 2027: the 13th is a Monday; Fridays are the 3rd, 10th, 17th and 24th
    days = [t[:10] for t in utc_times("0 12 13 * fri", UTC_ZONE, utc(2027, 9, 1), 5)]
    assert days == ["2027-09-03", "2027-09-10", "2027-09-13", "2027-09-17", "2027-09-24"]


def test_a_day_field_starting_with_a_star_must_match_as_well() -> None:
    assert [t[:10] for t in utc_times("0 12 */2 * fri", UTC_ZONE, utc(2027, 9, 1), 2)] == ["2027-09-03", "2027-09-17"]
    assert [t[:10] for t in utc_times("0 12 * * fri", UTC_ZONE, utc(2027, 9, 1), 2)] == ["2027-09-03", "2027-09-10"]
    assert [t[:10] for t in utc_times("0 12 13 * *", UTC_ZONE, utc(2027, 9, 1), 2)] == ["2027-09-13", "2027-10-13"]


def test_weekday_mornings_in_paris_skip_the_weekend() -> None:
    after = datetime(2027, 6, 4, tzinfo=PARIS)  # a Friday, midnight
    assert local_times("0 8 * * mon-fri", PARIS, after, 6) == [
        "2027-06-04 08:00+02:00", "2027-06-07 08:00+02:00", "2027-06-08 08:00+02:00",
        "2027-06-09 08:00+02:00", "2027-06-10 08:00+02:00", "2027-06-11 08:00+02:00"]
    assert cron_next(cron_parse("0 8 * * 1-5"), after=after, tz=PARIS) == utc(2027, 6, 4, 6)


def test_month_rollover_skips_months_without_the_day() -> None:
    assert utc_times("0 0 31 * *", UTC_ZONE, utc(2027, 1, 31), 3) == [
        "2027-03-31 00:00+00:00", "2027-05-31 00:00+00:00", "2027-07-31 00:00+00:00"]
    assert utc_times("0 0 1 * *", UTC_ZONE, utc(2027, 1, 31, 23, 59), 1) == ["2027-02-01 00:00+00:00"]


def test_year_rollover() -> None:
    assert utc_times("59 23 31 12 *", UTC_ZONE, utc(2027, 12, 31, 23, 59), 1) == ["2028-12-31 23:59+00:00"]
    assert local_times("@yearly", NEW_YORK, utc(2027, 6, 1), 2) == ["2028-01-01 00:00-05:00", "2029-01-01 00:00-05:00"]


def test_after_exactly_on_a_firing_time_excludes_it() -> None:
    cron = cron_parse("0 8 * * *")
    assert cron_next(cron, after=utc(2027, 6, 1, 8), tz=UTC_ZONE) == utc(2027, 6, 2, 8)
    assert cron_next(cron, after=utc(2027, 6, 1, 8) - timedelta(microseconds=1), tz=UTC_ZONE) == utc(2027, 6, 1, 8)
    assert cron_next(cron, after=utc(2027, 6, 1, 8, 0, 30), tz=UTC_ZONE) == utc(2027, 6, 2, 8)


def test_results_are_utc_aware_whatever_the_timezone_of_after() -> None:
    after = datetime(2027, 6, 1, 15, 7, 42, 123, tzinfo=tz_parse("Asia/Tokyo"))  # 06:07:42 UTC
    found = cron_next(cron_parse("*/5 * * * *"), after=after, tz=PARIS)
    assert found == utc(2027, 6, 1, 6, 10)
    assert found is not None and found.tzinfo is UTC and (found.second, found.microsecond) == (0, 0)


def test_a_naive_after_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        cron_next(cron_parse("* * * * *"), after=datetime(2027, 1, 1), tz=PARIS)


def test_cron_times_returns_count_increasing_times_for_a_preview() -> None:
    cron = cron_parse("*/10 * * * *")
    found = cron_times(cron, after=utc(2027, 1, 1), tz=PARIS, count=5)
    assert found == [utc(2027, 1, 1, 0, m) for m in (10, 20, 30, 40, 50)]
    assert cron_times(cron, after=utc(2027, 1, 1), tz=PARIS, count=0) == []
    assert cron_times(cron_parse("0 0 */31 2 1"), after=utc(2027, 1, 1), tz=UTC_ZONE, count=3) == [
        utc(2027, 2, 1), utc(2038, 2, 1), utc(2044, 2, 1)]  # years apart, still a full preview


def test_a_leap_day_is_found_four_years_on() -> None:
    assert cron_next(cron_parse("0 0 29 2 *"), after=utc(2028, 3, 1), tz=PARIS) == utc(2032, 2, 28, 23)


def test_every_minute_for_a_week_across_the_fall_back_is_every_utc_minute() -> None:
    every_minute, at = cron_parse("* * * * *"), utc(2027, 10, 25)
    for _ in range(10_080):  # a week of catch-up, the repeated hour included
        found = cron_next(every_minute, after=at, tz=PARIS)
        assert found == at + timedelta(minutes=1)
        at = found
    assert at == utc(2027, 11, 1)


# --- daylight saving -----------------------------------------------------------------------


def test_a_fixed_time_in_the_spring_gap_fires_when_the_gap_ends_in_paris() -> None:
    assert local_times("30 2 * * *", PARIS, utc(2027, 3, 27), 3) == [
        "2027-03-27 02:30+01:00", "2027-03-28 03:00+02:00", "2027-03-29 02:30+02:00"]
    assert cron_next(cron_parse("30 2 * * *"), after=utc(2027, 3, 27, 12), tz=PARIS) == utc(2027, 3, 28, 1)


def test_a_fixed_time_in_the_spring_gap_fires_when_the_gap_ends_in_new_york() -> None:
    assert local_times("30 2 * * *", NEW_YORK, utc(2027, 3, 13, 12), 3) == [
        "2027-03-14 03:00-04:00", "2027-03-15 02:30-04:00", "2027-03-16 02:30-04:00"]


def test_several_fixed_times_in_one_gap_fire_once_when_it_ends() -> None:
    assert local_times("0,15,30,45 2 * * *", PARIS, utc(2027, 3, 27, 12), 3) == [
        "2027-03-28 03:00+02:00", "2027-03-29 02:00+02:00", "2027-03-29 02:15+02:00"]
    # the gap's end is itself a time of the job: still one firing
    assert local_times("30 2,3 * * *", PARIS, utc(2027, 3, 27, 12), 3) == [
        "2027-03-28 03:00+02:00", "2027-03-28 03:30+02:00", "2027-03-29 02:30+02:00"]


def test_a_fixed_time_in_the_repeated_hour_fires_at_its_first_occurrence_only() -> None:
    assert utc_times("30 2 * * *", PARIS, utc(2027, 10, 30, 12), 2) == [
        "2027-10-31 00:30+00:00", "2027-11-01 01:30+00:00"]
    assert local_times("30 1 * * *", NEW_YORK, utc(2027, 11, 6, 12), 2) == [
        "2027-11-07 01:30-04:00", "2027-11-08 01:30-05:00"]


def test_a_fixed_time_does_not_fire_again_during_the_second_occurrence() -> None:
    after = utc(2027, 10, 31, 0, 45)  # 02:45 CEST, before the clock goes back to 02:00 CET
    assert cron_next(cron_parse("30 2 * * *"), after=after, tz=PARIS) == utc(2027, 11, 1, 1, 30)


def test_every_half_hour_skips_the_spring_gap() -> None:
    assert local_times("*/30 * * * *", PARIS, utc(2027, 3, 28), 4) == [
        "2027-03-28 01:30+01:00", "2027-03-28 03:00+02:00", "2027-03-28 03:30+02:00", "2027-03-28 04:00+02:00"]
    assert local_times("*/30 * * * *", NEW_YORK, utc(2027, 3, 14, 6), 3) == [
        "2027-03-14 01:30-05:00", "2027-03-14 03:00-04:00", "2027-03-14 03:30-04:00"]


def test_every_half_hour_fires_at_both_occurrences_of_the_repeated_hour() -> None:
    assert local_times("*/30 * * * *", PARIS, utc(2027, 10, 30, 23, 30), 5) == [
        "2027-10-31 02:00+02:00", "2027-10-31 02:30+02:00", "2027-10-31 02:00+01:00",
        "2027-10-31 02:30+01:00", "2027-10-31 03:00+01:00"]
    assert utc_times("*/30 * * * *", PARIS, utc(2027, 10, 30, 23, 30), 5) == [
        "2027-10-31 00:00+00:00", "2027-10-31 00:30+00:00", "2027-10-31 01:00+00:00",
        "2027-10-31 01:30+00:00", "2027-10-31 02:00+00:00"]
    assert local_times("*/30 * * * *", NEW_YORK, utc(2027, 11, 7, 5), 4) == [
        "2027-11-07 01:30-04:00", "2027-11-07 01:00-05:00", "2027-11-07 01:30-05:00", "2027-11-07 02:00-05:00"]


def test_a_wildcard_job_started_inside_the_repeated_hour_finds_the_second_occurrence() -> None:
    cron = cron_parse("*/30 * * * *")
    # 02:40 CEST: the next time on the clock is 03:00, but 02:00 CET comes first
    assert cron_next(cron, after=utc(2027, 10, 31, 0, 40), tz=PARIS) == utc(2027, 10, 31, 1)
    assert cron_next(cron, after=utc(2027, 10, 31, 1, 10), tz=PARIS) == utc(2027, 10, 31, 1, 30)


def test_hourly_follows_the_clock_across_both_changes() -> None:
    assert local_times("0 * * * *", PARIS, utc(2027, 3, 27, 23, 30), 3) == [
        "2027-03-28 01:00+01:00", "2027-03-28 03:00+02:00", "2027-03-28 04:00+02:00"]
    assert local_times("0 * * * *", PARIS, utc(2027, 10, 30, 22, 30), 4) == [
        "2027-10-31 01:00+02:00", "2027-10-31 02:00+02:00", "2027-10-31 02:00+01:00", "2027-10-31 03:00+01:00"]
    assert local_times("@hourly", NEW_YORK, utc(2027, 3, 14, 5, 30), 2) == [
        "2027-03-14 01:00-05:00", "2027-03-14 03:00-04:00"]
    assert local_times("@hourly", NEW_YORK, utc(2027, 11, 7, 4, 30), 3) == [
        "2027-11-07 01:00-04:00", "2027-11-07 01:00-05:00", "2027-11-07 02:00-05:00"]


def test_a_fixed_minute_in_a_wildcard_hour_is_a_wildcard_job() -> None:
    assert local_times("15 */2 * * *", PARIS, utc(2027, 3, 27, 23), 2) == [
        "2027-03-28 00:15+01:00", "2027-03-28 04:15+02:00"]


def test_lord_howe_shifts_by_half_an_hour() -> None:
    assert local_times("15 2 * * *", LORD_HOWE, utc(2027, 10, 2), 2) == [
        "2027-10-03 02:30+11:00", "2027-10-04 02:15+11:00"]
    assert local_times("*/15 * * * *", LORD_HOWE, utc(2027, 4, 3, 14, 20), 5) == [
        "2027-04-04 01:30+11:00", "2027-04-04 01:45+11:00", "2027-04-04 01:30+10:30",
        "2027-04-04 01:45+10:30", "2027-04-04 02:00+10:30"]


def _oracle(cron: Cron, tz: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """The firings in (start, end] read off the clock minute by minute, straight from the rules."""

    def matches(naive: datetime) -> bool:
        in_month, in_week = naive.day in cron.days, naive.isoweekday() % 7 in cron.weekdays
        day = in_month or in_week if cron.day_restricted and cron.weekday_restricted else in_month and in_week
        return day and naive.month in cron.months and naive.hour in cron.hours and naive.minute in cron.minutes

    fired: list[datetime] = []
    minute, at = timedelta(minutes=1), start + timedelta(minutes=1)
    while at <= end:
        now, before = at.astimezone(tz), (at - minute).astimezone(tz)
        naive, skipped = now.replace(tzinfo=None), before.replace(tzinfo=None) + minute
        if matches(naive) and (cron.wildcard_time or now.fold == 0):
            fired.append(at)
        elif not cron.wildcard_time and skipped < naive:  # a gap: skipped .. naive - 1 minute
            while skipped < naive and not matches(skipped):
                skipped += minute
            if skipped < naive:
                fired.append(at)
        at += minute
    return fired


@pytest.mark.parametrize("zone", ["Europe/Paris", "America/New_York", "Australia/Lord_Howe"])
@pytest.mark.parametrize("expression", [
    "*/30 * * * *", "0 * * * *", "15 */2 * * *", "*/7 1-3 * * *", "30 2 * * *", "0,30 1,2 * * *",
    "45 1 * * *", "10-50/20 2 * * *", "0 3 * * *",
])
def test_the_walk_agrees_with_reading_the_clock_minute_by_minute(zone: str, expression: str) -> None:
    tz, cron = tz_parse(zone), cron_parse(expression)
    for day in (date(2027, 3, 27), date(2027, 10, 30), date(2027, 3, 13), date(2027, 11, 6),
                date(2027, 4, 3), date(2027, 10, 2)):
        start = datetime(day.year, day.month, day.day, tzinfo=UTC)
        end = start + timedelta(days=2)
        expected = _oracle(cron, tz, start, end)
        assert [t for t in cron_times(cron, after=start, tz=tz, count=200) if t <= end] == expected
        for after in (start + timedelta(minutes=m) for m in range(0, 2 * 24 * 60, 10)):
            later = [t for t in expected if t > after]
            if later:
                assert cron_next(cron, after=after, tz=tz) == later[0], after


# --- timezones -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires", "Etc/GMT+5", "Etc/GMT-14"])
def test_tz_parse_accepts_iana_names(name: str) -> None:
    assert tz_parse(name).key == name


@pytest.mark.parametrize("name", [
    "", " ", "Mars/Olympus_Mons", "../etc", "../../etc/passwd", "/etc/passwd", "Europe/../UTC",
    "America", "zone.tab", "tzdata.zi", "UTC\x00", " UTC", "Europe/Paris/", "Europe\\Paris", "leapseconds",
])
def test_tz_parse_rejects_unknown_empty_and_path_like_names(name: str) -> None:
    with pytest.raises(CronError, match="^unknown timezone: "):
        tz_parse(name)
