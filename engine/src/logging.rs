//! Where a log line comes from: the spans that put the node, the shard and
//! the group on every line, and the stderr logger `coraft-node` installs.
//!
//! The engine logs through the `log` crate; [`install`] routes those records
//! through `tracing`'s log bridge, so each line carries the spans entered
//! on its thread when it was written:
//!
//! - a `node` span ([`node_span`]) on the thread that runs the process
//!   (`coraft-node`'s main thread);
//! - a `shard` span ([`shard_span`], fields `node` and `shard`) entered for
//!   the whole life of each shard's executor thread, so everything that
//!   thread runs (the loop, its connections, its WAL) logs with it;
//! - a `group` span ([`group_span`], field `group`) entered around the
//!   per-group work that logs: membership changes, snapshot installs and
//!   snapshot failures, reset-peers, protocol violations, admin requests.
//!
//! The write path enters no span: entering one costs a lock of the
//! subscriber's filter shared by all threads (tracing-subscriber's
//! `EnvFilter` takes a read lock on every enter and exit), so group spans
//! are made only where a line may be written, never per proposal or per
//! message. Without a subscriber (an embedding program that installs
//! none), creating a span costs one check of a cached flag.
//!
//! The spans are at level ERROR under their own target
//! ([`SPAN_TARGET`]), which [`install`] always enables: a filter such as
//! `RUST_LOG=coraft_wal=debug` still puts the node on every line.

use tracing::Span;

use coraft_tuning::LogLevel;

use crate::raft::{GroupId, NodeId};

/// The target of the node, shard and group spans.
pub const SPAN_TARGET: &str = "coraft_span";

/// The span of the thread that runs a node (`coraft-node`'s main thread).
pub fn node_span(node: NodeId) -> Span {
    tracing::error_span!(target: SPAN_TARGET, "node", node = node.0)
}

/// The span a shard's executor thread runs in, for its whole life.
pub fn shard_span(node: NodeId, shard: usize) -> Span {
    tracing::error_span!(target: SPAN_TARGET, "shard", node = node.0, shard = shard as u64)
}

/// The span of work on one group, entered inside its shard's span (which
/// names the node).
pub fn group_span(group: GroupId) -> Span {
    tracing::error_span!(target: SPAN_TARGET, "group", group = group.0)
}

/// How [`install`] writes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One line of text: time, level, spans with their fields, target,
    /// message.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `fields.message`,
    /// `target`, `span`, `spans`).
    Json,
}

/// Why [`install`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// `RUST_LOG` does not parse as a filter.
    #[error("RUST_LOG=`{value}` is not a log filter: {reason}")]
    BadFilter {
        /// The variable's value.
        value: String,
        /// What the parser said.
        reason: String,
    },
    /// Another logger was installed first.
    #[error("a logger is already installed: {0}")]
    AlreadyInstalled(String),
}

/// The name of `level` as a filter directive.
fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Off => "off",
        LogLevel::Error => "error",
        LogLevel::Warn => "warn",
        LogLevel::Info => "info",
        LogLevel::Debug => "debug",
        LogLevel::Trace => "trace",
    }
}

/// Installs the process's logger: lines on stderr in `format`, filtered by
/// `RUST_LOG` when it is set (its usual syntax: `warn`,
/// `coraft::runtime=debug,coraft_wal=info`) over `level` (a bare level in
/// `RUST_LOG` replaces it, a module's level adds to it); glommio's own events
/// are off unless `RUST_LOG` names `glommio`. The engine's `log` records go
/// through it too. Call once, before the node starts.
pub fn install(level: LogLevel, format: LogFormat) -> Result<(), LoggingError> {
    use tracing_subscriber::filter::EnvFilter;
    // The config's level first, then RUST_LOG's directives: a bare level
    // there replaces the config's, a module's adds to it. glommio's own
    // events were never printed before coraft-node used tracing, and its
    // reactor logs a harmless ERROR at each start on a file system without
    // polled I/O: off unless RUST_LOG names glommio.
    let base = format!("{},glommio=off", level_name(level));
    let filter = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(value) if !value.trim().is_empty() => {
            EnvFilter::builder()
                .parse(format!("{base},{value}"))
                .map_err(|e| LoggingError::BadFilter {
                    value: value.clone(),
                    reason: e.to_string(),
                })?
        }
        _ => EnvFilter::builder()
            .parse(&base)
            .expect("a level and glommio=off parse"),
    };
    let filter = filter.add_directive(
        format!("{SPAN_TARGET}=error")
            .parse()
            .expect("the span target's directive parses"),
    );
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    let installed = match format {
        LogFormat::Text => tracing_subscriber::util::SubscriberInitExt::try_init(subscriber.finish()),
        LogFormat::Json => {
            tracing_subscriber::util::SubscriberInitExt::try_init(subscriber.json().with_span_list(true).finish())
        }
    };
    installed.map_err(|e| LoggingError::AlreadyInstalled(e.to_string()))
}
