//! `errorThreshold`: how many failed items the whole input may have before the job is stopped.

/// The threshold: `None` (setting `-1`) ignores failures; `Some(n)` stops once more than `n` items
/// failed across all instances, as Azure ML ("if the error count for the entire input goes above this
/// value, the batch inference is aborted").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrorThreshold(Option<u64>);

/// The setting was below -1.
#[derive(Debug, thiserror::Error)]
#[error("errorThreshold must be -1 (ignore failures) or at least 0, got {0}")]
pub struct ThresholdError(pub i64);

impl ThresholdError {
    /// A bounded name for metrics and status reasons.
    pub fn category(&self) -> &'static str {
        "InvalidErrorThreshold"
    }
}

impl ErrorThreshold {
    /// From the deployment setting: -1 ignores failures.
    pub fn from_setting(value: i64) -> Result<Self, ThresholdError> {
        match value {
            -1 => Ok(Self(None)),
            v if v >= 0 => Ok(Self(Some(v.unsigned_abs()))),
            v => Err(ThresholdError(v)),
        }
    }

    /// The setting as given (-1 when failures are ignored).
    pub fn setting(&self) -> i64 {
        self.0.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
    }

    /// The reason to stop, when `failed_items` is above the threshold.
    pub fn check(&self, failed_items: u64) -> Option<String> {
        let limit = self.0?;
        (failed_items > limit).then(|| {
            format!("error threshold crossed: {failed_items} failed item(s) exceeds errorThreshold {limit}")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minus_one_ignores_every_failure() {
        let t = ErrorThreshold::from_setting(-1).unwrap();
        assert_eq!(t.check(u64::MAX), None);
        assert_eq!(t.setting(), -1);
    }

    #[test]
    fn the_job_stops_only_above_the_threshold() {
        let t = ErrorThreshold::from_setting(5).unwrap();
        assert_eq!(t.check(5), None);
        let reason = t.check(6).unwrap();
        assert!(
            reason.contains("6 failed item(s) exceeds errorThreshold 5"),
            "{reason}"
        );
        assert!(ErrorThreshold::from_setting(0).unwrap().check(1).is_some());
    }

    #[test]
    fn values_below_minus_one_are_rejected() {
        assert!(ErrorThreshold::from_setting(-2).is_err());
    }
}
