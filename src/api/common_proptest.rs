//! Property tests of the parsers of user input: they never panic, and they accept exactly what the
//! CRD patterns accept (the API server checks the patterns with RE2; the `regex` crate has the same
//! syntax and semantics for them), so the operator never meets a string the API server let through
//! but the operator cannot read. A bounded number of cases per property keeps the suite fast.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use regex::Regex;

use super::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn re(pattern: &str) -> Regex {
    Regex::new(pattern).unwrap()
}

/// Strings mostly made of the characters the parsers care about, so that near misses are common.
fn near(alphabet: &'static str, max: usize) -> impl Strategy<Value = String> {
    let chars: Vec<char> = alphabet.chars().collect();
    prop::collection::vec(prop::sample::select(chars), 0..max).prop_map(String::from_iter)
}

/// One well-formed duration term and its exact nanoseconds.
fn term() -> impl Strategy<Value = (String, u128)> {
    (
        0usize..4,
        any::<u64>(),
        prop::option::of((1u32..=9, any::<u64>())),
    )
        .prop_map(|(unit, raw, frac)| {
            let (suffix, digits, nanos): (&str, u32, u128) = [
                ("h", 5, 3_600_000_000_000),
                ("m", 7, 60_000_000_000),
                ("s", 9, 1_000_000_000),
                ("ms", 12, 1_000_000),
            ][unit];
            let whole = u128::from(raw) % 10u128.pow(digits);
            let mut text = whole.to_string();
            let mut total = whole * nanos;
            if let Some((len, f)) = frac {
                let scale = 10u128.pow(len);
                let f = u128::from(f) % scale;
                text.push_str(&format!(".{f:0width$}", width = len as usize));
                total += f * nanos / scale;
            }
            (format!("{text}{suffix}"), total)
        })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_never_panic(s in any::<String>()) {
        let _ = parse_duration(&s);
        let _ = parse_duration_at_most(&s, MAX_JOB_TIMEOUT);
    }

    #[test]
    fn durations_agree_with_the_schema_pattern(s in near("0123456789.hmsd ", 24)) {
        prop_assert_eq!(parse_duration(&s).is_ok(), re(DURATION_PATTERN).is_match(&s), "{:?}", s);
    }

    #[test]
    fn well_formed_durations_sum_their_terms(terms in prop::collection::vec(term(), 1..=MAX_DURATION_TERMS)) {
        let text: String = terms.iter().map(|(t, _)| t.as_str()).collect();
        let nanos: u128 = terms.iter().map(|(_, n)| n).sum();
        prop_assert!(re(DURATION_PATTERN).is_match(&text));
        // Below Go's int64 nanoseconds, so CEL's duration() cannot overflow on it.
        prop_assert!(nanos < i64::MAX as u128);
        let d = parse_duration(&text).unwrap();
        prop_assert_eq!(d.as_nanos(), nanos);
        let bounded = parse_duration_at_most(&text, MAX_JOB_TIMEOUT);
        prop_assert_eq!(bounded.is_ok(), !d.is_zero() && d <= MAX_JOB_TIMEOUT);
    }

    #[test]
    fn shm_sizes_never_panic_and_agree_with_the_pattern(s in near("0123456789bkmgBKMGTi ", 18)) {
        let parsed = parse_shm_size(&s);
        let matches = re(SHM_SIZE_PATTERN).is_match(&s);
        prop_assert_eq!(!matches!(parsed, Err(InvalidShmSize::Malformed(_))), matches, "{:?}", s);
        if let Ok(bytes) = parsed {
            prop_assert!((1..=MAX_SHM_SIZE).contains(&bytes));
        }
    }

    #[test]
    fn shm_sizes_scale_by_their_unit(n in 1u64..=1024, unit in 0usize..5) {
        let (suffix, shift) = [("", 0), ("k", 10), ("Mi", 20), ("g", 30), ("Ti", 40)][unit];
        let bytes = n << shift;
        let got = parse_shm_size(&format!("{n}{suffix}"));
        if bytes <= MAX_SHM_SIZE {
            prop_assert_eq!(got, Ok(bytes));
        } else {
            prop_assert!(matches!(got, Err(InvalidShmSize::OutOfRange(_))));
        }
    }

    #[test]
    fn data_uris_never_panic(s in any::<String>()) {
        let _ = s.parse::<DataUri>();
        let _ = format!("pvc://{s}").parse::<DataUri>();
        let _ = format!("https://{s}").parse::<DataUri>();
        let _ = format!("configmap://{s}").parse::<DataUri>();
    }

    #[test]
    fn data_uris_the_operator_reads_are_uris_the_api_server_accepts(
        scheme in prop::sample::select(vec!["pvc://", "https://", "configmap://", "http://", ""]),
        rest in near("ab0-./.. ?#\u{0}\u{7f}é", 20),
    ) {
        let uri = format!("{scheme}{rest}");
        let pvc = re(PVC_URI_PATTERN).is_match(&uri)
            && !re(r"^pvc://[^/]*/(.*/)?\.\.(/|$)").is_match(&uri);
        let https = re(HTTPS_URI_PATTERN).is_match(&uri);
        let configmap = re(CONFIGMAP_URI_PATTERN).is_match(&uri);
        match uri.parse::<DataUri>() {
            Ok(DataUri::Pvc { claim, path }) => {
                prop_assert!(pvc, "{:?}", uri);
                prop_assert!(is_dns_subdomain(&claim) && !path.starts_with('/'));
            }
            Ok(DataUri::Https(_)) => prop_assert!(https, "{:?}", uri),
            Ok(DataUri::ConfigMap(_)) => prop_assert!(configmap, "{:?}", uri),
            // Short strings: the 253-character claim limit the pattern leaves to maxLength is not
            // reached, so the pattern refuses whatever the parser refuses.
            Err(_) => prop_assert!(!pvc && !https && !configmap, "{:?}", uri),
        }
    }

    #[test]
    fn environment_refs_agree_with_the_schema_pattern(s in near("ab0-.:@latestA_", 20)) {
        prop_assert_eq!(
            EnvironmentRef::parse(&s).is_some(),
            re(ENVIRONMENT_REF_PATTERN).is_match(&s),
            "{:?}", s
        );
    }

    #[test]
    fn environment_refs_never_panic(s in any::<String>()) {
        let _ = EnvironmentRef::parse(&s);
    }
}

#[test]
fn the_largest_pattern_durations_stay_below_go_int64_nanoseconds() {
    let worst = "999999999999.999999999ms".repeat(MAX_DURATION_TERMS);
    assert!(re(DURATION_PATTERN).is_match(&worst));
    let d = parse_duration(&worst).unwrap();
    assert!(d.as_nanos() < i64::MAX as u128, "{d:?}");
    for unit in [
        "99999.999999999h",
        "9999999.999999999m",
        "999999999.999999999s",
    ] {
        let d = parse_duration(&unit.repeat(MAX_DURATION_TERMS)).unwrap();
        assert!(d < Duration::from_nanos(i64::MAX as u64), "{unit}");
    }
}
