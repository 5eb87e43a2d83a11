//! `coraft-wal`: inspect, verify and dump a WAL directory without writing
//! it; `rebuild-range` is the one command that writes (the range file).
//!
//! ```text
//! coraft-wal inspect DIR                       segments, groups, index ranges, sizes,
//!                                              removed (forgotten) groups, and which
//!                                              groups hold the oldest segments
//! coraft-wal verify DIR [--strict]             every CRC; exit 1 on corruption
//! coraft-wal dump DIR --group G --from I --to J   entries I..=J of group G
//! coraft-wal rebuild-range DIR                 writes the segment range file anew
//!                                              from the segments found
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use coraft_wal::format::{decode_record, segment_file_name, Decoded, Record};
use coraft_wal::recovery::{
    recover, recover_ignoring_range_file, write_segment_range, Recovered, SegmentRange, SEGMENT_RANGE_FILE_NAME,
};
use coraft_wal::{DmaFs, Error, Need, RecoveryMode, SEGMENT_HOLDERS_MAX};

/// How many of the oldest segments `inspect` reports holders for.
const INSPECT_SEGMENTS_MAX: usize = 4;

/// Inspects, verifies and dumps a coraft WAL directory (one shard's log)
/// without writing to it; rebuilds its segment range file on request.
#[derive(Parser, Debug)]
#[command(name = "coraft-wal", version, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints the segments, the groups with their index ranges, hard state
    /// and snapshot, the groups removed (a forget-group record still in the
    /// log), a torn tail, and which groups hold the oldest segments.
    Inspect {
        /// The WAL directory (a shard's, e.g. wal.dir/shard-0).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
    /// Checks every record's CRC: exit 0 when the log is sound (a torn tail
    /// of the last flush is reported, not an error), 1 on corruption.
    Verify {
        /// The WAL directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Treat a torn tail as corruption too. Default: a torn tail of the
        /// last, unsynced flush is tolerated.
        #[arg(long)]
        strict: bool,
    },
    /// Prints entries of one group: index, term, type, LSN, length and the
    /// first bytes of the payload in hex.
    Dump {
        /// The WAL directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// The group whose entries to print.
        #[arg(long, value_name = "G")]
        group: u64,
        /// First index to print. Default: the group's first entry.
        #[arg(long, value_name = "I", default_value_t = 0, hide_default_value = true)]
        from: u64,
        /// Last index to print. Default: the group's last entry.
        #[arg(long, value_name = "J", default_value_t = u64::MAX, hide_default_value = true)]
        to: u64,
    },
    /// Writes the segment range file anew, naming the oldest and newest
    /// segment found, for a WAL refused because the file is missing or
    /// damaged. Run it only on a stopped node and only if no segment file
    /// was lost: a segment missing before the oldest or after the newest
    /// found cannot be detected once the file is rewritten. Refuses a log
    /// with a gap, a damaged record or header (exit 1, naming the file).
    RebuildRange {
        /// The WAL directory.
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("coraft-wal: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Inspect { dir } => inspect(&recover(&dir, RecoveryMode::TolerateTornTail, false)?)?,
        Command::Verify { dir, strict } => {
            let mode = if strict {
                RecoveryMode::Strict
            } else {
                RecoveryMode::TolerateTornTail
            };
            return Ok(verify(&dir, mode));
        }
        Command::Dump { dir, group, from, to } => {
            dump(&recover(&dir, RecoveryMode::TolerateTornTail, false)?, group, from, to)?
        }
        Command::RebuildRange { dir } => rebuild_range(&dir)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn rebuild_range(dir: &Path) -> Result<()> {
    let recovered = recover_ignoring_range_file(dir, RecoveryMode::TolerateTornTail)
        .with_context(|| format!("the segments in {} do not form a whole log", dir.display()))?;
    let (Some(oldest), Some(newest)) = (recovered.segments.first(), recovered.segments.last()) else {
        bail!(
            "no segment with a valid header in {}: nothing to record (a WAL without segments needs no range file)",
            dir.display()
        );
    };
    let range = SegmentRange {
        oldest: oldest.first_lsn,
        newest: newest.first_lsn,
    };
    write_segment_range(&DmaFs::default(), dir, range)?;
    println!(
        "wrote {}: oldest segment {}, newest {} ({} segments, LSN {} to {})",
        dir.join(SEGMENT_RANGE_FILE_NAME).display(),
        segment_file_name(range.oldest),
        segment_file_name(range.newest),
        recovered.segments.len(),
        range.oldest,
        recovered.next_lsn - 1
    );
    println!("segments lost before the oldest or after the newest of these, if any, can no longer be detected");
    Ok(())
}

fn inspect(recovered: &Recovered) -> Result<()> {
    println!("segments: {}", recovered.segments.len());
    for segment in &recovered.segments {
        println!(
            "  {}  format {}  first_lsn {}  records {}  used {} of {} bytes",
            segment.path.display(),
            segment.version,
            segment.first_lsn,
            segment.records,
            segment.end_offset,
            segment.segment_bytes
        );
    }
    println!("last_lsn: {}", recovered.next_lsn - 1);
    if let Some(torn) = recovered.torn_tail {
        println!(
            "torn tail: segment {} offset {} ({:?}), would be truncated on open",
            torn.segment, torn.offset, torn.reason
        );
    }
    println!("groups: {}", recovered.groups.iter().count());
    for (group, log) in recovered.groups.iter() {
        let state = log.state();
        println!(
            "  group {group}: entries {}..={}  hard_state {:?}  snapshot {:?}",
            state.first_index, state.last_index, state.hard_state, state.snapshot
        );
    }
    let removed: Vec<(u64, u64)> = recovered.groups.forgotten().collect();
    println!("removed groups: {}", removed.len());
    for (group, lsn) in removed {
        let after = match recovered.groups.get(group) {
            Some(_) => "; records after it start a new log (listed above)",
            None => "",
        };
        println!("  group {group}: forgotten at lsn {lsn}{after}");
    }
    print_holders(recovered);
    Ok(())
}

/// The groups holding the oldest segments: a segment can be deleted only
/// once no group needs a record in it or in any segment before it.
fn print_holders(recovered: &Recovered) {
    let segments: Vec<u64> = recovered.segments.iter().map(|segment| segment.first_lsn).collect();
    let report = recovered.groups.segment_holders(&segments, INSPECT_SEGMENTS_MAX);
    println!(
        "deletion held back by (oldest {INSPECT_SEGMENTS_MAX} segments, at most {SEGMENT_HOLDERS_MAX} groups each):"
    );
    for entry in &report {
        let name = format!("segment {} (file {})", entry.segment, segment_file_name(entry.segment));
        if entry.holders.is_empty() {
            println!("  {name}: no group's oldest record; goes once the segments before it do");
        }
        for holder in &entry.holders {
            let need = match holder.need {
                Need::Entry { index } => format!("needs entry {index}"),
                Need::HardState => "needs its hard state".to_owned(),
                Need::PurgeMarker { index } => format!("needs its purge marker at {index}"),
            };
            let purged = match holder.purged_through {
                Some(index) => format!("purged through {index}"),
                None => "never purged".to_owned(),
            };
            let behind = match holder.lsns_behind_newest_purge {
                Some(lsns) => format!("{lsns} records behind the newest purge"),
                None => "no group has purged".to_owned(),
            };
            println!(
                "  {name} held by group {}: {need} (lsn {}), {purged}, {behind}",
                holder.group, holder.lsn
            );
        }
        if entry.more_holders > 0 {
            println!("  {name} held by {} more groups", entry.more_holders);
        }
    }
}

fn verify(dir: &Path, mode: RecoveryMode) -> ExitCode {
    match recover(dir, mode, false) {
        Ok(recovered) => {
            let records: u64 = recovered.segments.iter().map(|s| s.records).sum();
            println!(
                "ok: {} segments, {records} records, every CRC verified",
                recovered.segments.len()
            );
            if let Some(torn) = recovered.torn_tail {
                println!(
                    "torn tail of the last flush (its sync never returned): segment {} offset {}",
                    torn.segment, torn.offset
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            println!("FAILED: {error}");
            if let Error::Corruption { segment, offset } = error {
                let file = dir.join(segment_file_name(segment));
                println!(
                    "corruption: file {} offset {offset}: bytes an earlier sync covered are damaged; \
                     rebuild this node from its peers (docs/operations.md)",
                    file.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

fn dump(recovered: &Recovered, group: u64, from: u64, to: u64) -> Result<()> {
    let log = recovered
        .groups
        .get(group)
        .with_context(|| format!("group {group} is not in the WAL"))?;
    let state = log.state();
    let (first, last) = (from.max(state.first_index), to.min(state.last_index));
    for index in first..=last {
        let location = log.entry(index).context("entry in range")?;
        let segment = recovered
            .segments
            .iter()
            .rev()
            .find(|segment| segment.first_lsn <= location.lsn)
            .context("entry's segment")?;
        let at = location.offset as usize;
        let bytes = segment.map.get(at..).context("entry's offset")?;
        let Decoded::Record(
            Record::Entry {
                term,
                entry_type,
                payload,
                ..
            },
            _,
        ) = decode_record(bytes)
        else {
            bail!("segment {} offset {at}: not an entry", segment.first_lsn);
        };
        println!(
            "group {group} index {index} term {term} type {entry_type} lsn {} len {}  {}",
            location.lsn,
            payload.len(),
            preview(payload)
        );
    }
    Ok(())
}

fn preview(payload: &[u8]) -> String {
    const PREVIEW_BYTES_MAX: usize = 32;
    let shown = &payload[..payload.len().min(PREVIEW_BYTES_MAX)];
    let hex: String = shown.iter().map(|b| format!("{b:02x}")).collect();
    if payload.len() > PREVIEW_BYTES_MAX {
        format!("{hex}..")
    } else {
        hex
    }
}
