//! Where routing tables come from.
//!
//! A [`RoutingSource`] runs for the router's lifetime and hands every new snapshot to a
//! [`TableSink`]; the router validates it, compiles it and swaps it in atomically (requests in
//! flight finish on the table they started with). A snapshot that fails validation is counted,
//! logged and ignored: the last good table stays.
//!
//! Sources:
//! - [`StaticFile`]: a YAML or JSON file, re-read when it changes (polled) or on SIGHUP. Used in
//!   standalone mode and by the data-plane tests.
//! - The cluster source (OnlineEndpoints' routing tables plus EndpointSlices for instance
//!   readiness) implements [`RoutingSource`] next to the OnlineEndpoint controller; it builds a
//!   [`RoutingTable`](super::table::RoutingTable) and calls [`TableSink::publish`].

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::signal::unix::{SignalKind, signal};

use super::{
    server::Router,
    table::{RoutingTable, TableError},
};

/// A stream of routing-table snapshots.
pub trait RoutingSource: Send + 'static {
    /// Publishes snapshots into `sink` until the router stops; returns only on a fatal error.
    fn run(self, sink: TableSink) -> impl Future<Output = Result<(), SourceError>> + Send;
}

/// Where a source publishes snapshots.
#[derive(Clone, Debug)]
pub struct TableSink {
    router: Arc<Router>,
}

impl TableSink {
    pub(super) fn new(router: Arc<Router>) -> Self {
        Self { router }
    }

    /// Validates and applies a snapshot. On error the previous table stays in force.
    pub fn publish(&self, table: &RoutingTable) -> Result<(), TableError> {
        self.router.apply(table)
    }
}

/// A source failed for good.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The static file cannot be read.
    #[error("reading routing table {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The static file is not a valid routing table.
    #[error("routing table {path} is invalid")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: TableError,
    },
    /// Signal handling could not be set up.
    #[error("installing the SIGHUP handler")]
    Signal(#[source] std::io::Error),
}

impl SourceError {
    /// A bounded name for metrics and logs.
    pub fn category(&self) -> &'static str {
        match self {
            Self::Read { .. } => "read",
            Self::Invalid { .. } => "invalid",
            Self::Signal(_) => "signal",
        }
    }
}

/// A routing table in a file, re-read when its contents change.
#[derive(Debug)]
pub struct StaticFile {
    path: PathBuf,
    poll: Duration,
    text: String,
    table: RoutingTable,
}

impl StaticFile {
    /// How often the file is checked for changes by default.
    pub const DEFAULT_POLL: Duration = Duration::from_millis(500);

    /// Reads and validates the file now, so a bad file stops start-up with a clear message.
    pub fn open(path: &Path, poll: Duration) -> Result<Self, SourceError> {
        let text = read(path)?;
        let table = RoutingTable::parse(&text).map_err(|source| SourceError::Invalid {
            path: path.to_owned(),
            source,
        })?;
        Ok(Self {
            path: path.to_owned(),
            poll,
            text,
            table,
        })
    }

    /// The table read at start-up.
    pub fn table(&self) -> &RoutingTable {
        &self.table
    }
}

fn read(path: &Path) -> Result<String, SourceError> {
    std::fs::read_to_string(path).map_err(|source| SourceError::Read {
        path: path.to_owned(),
        source,
    })
}

impl RoutingSource for StaticFile {
    async fn run(self, sink: TableSink) -> Result<(), SourceError> {
        let Self {
            path,
            poll,
            mut text,
            table,
        } = self;
        if let Err(error) = sink.publish(&table) {
            return Err(SourceError::Invalid {
                path,
                source: error,
            });
        }
        let mut hangup = signal(SignalKind::hangup()).map_err(SourceError::Signal)?;
        let mut ticks = tokio::time::interval(poll);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = hangup.recv() => tracing::info!(path = %path.display(), "SIGHUP: re-reading the routing table"),
            }
            // Reading a small file twice a second is cheaper than trusting mtime granularity.
            let current = match read(&path) {
                Ok(current) => current,
                Err(error) => {
                    tracing::warn!(error = %error, "keeping the current routing table");
                    continue;
                }
            };
            if current == text {
                continue;
            }
            let applied = RoutingTable::parse(&current).and_then(|table| sink.publish(&table));
            match applied {
                Ok(()) => tracing::info!(path = %path.display(), "routing table reloaded"),
                Err(error) => tracing::warn!(
                    path = %path.display(),
                    category = error.category(),
                    error = %error,
                    "routing table rejected, keeping the current one"
                ),
            }
            text = current;
        }
    }
}
