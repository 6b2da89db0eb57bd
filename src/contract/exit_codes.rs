//! How a batch driver Pod ends, as the BatchJob controller reads it.
//!
//! Writer: `mlcompute batch-driver` (its process exit code, and its last stderr line
//! `error: <reason>`, which the driver container's `FallbackToLogsOnError` termination message
//! carries). Readers: the BatchJob controller (the Job's pod failure policy fails the Job at once
//! on [`USAGE`], [`THRESHOLD_CROSSED`] and [`WORKER_START_FAILED`], since no retry changes them; the
//! status names the reason from the code and the message).

/// A usage error: the command line or environment does not parse (clap's own code).
pub const USAGE: i32 = 2;
/// The error threshold was crossed (reason on stderr and in `summary.json`).
pub const THRESHOLD_CROSSED: i32 = 3;
/// No Python worker could be started (interpreter missing, or the scoring script's import or
/// `init()` failed).
pub const WORKER_START_FAILED: i32 = 4;
/// `--merge-only` found mini-batches not finished yet.
pub const MERGE_INCOMPLETE: i32 = 5;

/// The prefix of the driver's last stderr line, before the reason.
pub const REASON_PREFIX: &str = "error: ";

/// The reason in a termination message: its last line, without [`REASON_PREFIX`].
pub fn reason(message: &str) -> String {
    let line = message.trim().lines().last().unwrap_or_default();
    line.strip_prefix(REASON_PREFIX).unwrap_or(line).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_is_the_last_line() {
        assert_eq!(
            reason("warn: x\nerror: threshold crossed\n"),
            "threshold crossed"
        );
        assert_eq!(reason("plain"), "plain");
        assert_eq!(reason(""), "");
    }
}
