//! `coraft-wal`: inspect, verify and dump a WAL directory without writing it.
//!
//! ```text
//! coraft-wal inspect DIR                       segments, groups, index ranges, sizes,
//!                                              and which groups hold the oldest segments
//! coraft-wal verify DIR [--strict]             every CRC; exit 1 on corruption
//! coraft-wal dump DIR --group G --from I --to J   entries I..=J of group G
//! ```

use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use coraft_wal::format::{decode_record, segment_file_name, Decoded, Record};
use coraft_wal::recovery::{recover, Recovered};
use coraft_wal::{Error, Need, RecoveryMode, SEGMENT_HOLDERS_MAX};

/// How many of the oldest segments `inspect` reports holders for.
const INSPECT_SEGMENTS_MAX: usize = 4;

const USAGE: &str = "usage: coraft-wal inspect DIR | verify DIR [--strict] | \
                     dump DIR --group G --from I --to J";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("coraft-wal: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Vec<String>) -> Result<ExitCode> {
    let (command, dir) = match args.as_slice() {
        [command, dir, ..] => (command.as_str(), Path::new(dir)),
        _ => bail!("{USAGE}"),
    };
    let flag = |name: &str| -> Result<Option<u64>> {
        match args.iter().position(|arg| arg == name) {
            Some(at) => {
                let value = args.get(at + 1).with_context(|| format!("{name} needs a value"))?;
                Ok(Some(value.parse().with_context(|| format!("{name} {value}"))?))
            }
            None => Ok(None),
        }
    };
    match command {
        "inspect" => inspect(&recover(dir, RecoveryMode::TolerateTornTail, false)?)?,
        "verify" => {
            let strict = args.iter().any(|arg| arg == "--strict");
            let mode = if strict {
                RecoveryMode::Strict
            } else {
                RecoveryMode::TolerateTornTail
            };
            return Ok(verify(dir, mode));
        }
        "dump" => {
            let group = flag("--group")?.context("dump needs --group")?;
            let from = flag("--from")?.unwrap_or(0);
            let to = flag("--to")?.unwrap_or(u64::MAX);
            dump(&recover(dir, RecoveryMode::TolerateTornTail, false)?, group, from, to)?;
        }
        _ => bail!("{USAGE}"),
    }
    Ok(ExitCode::SUCCESS)
}

fn inspect(recovered: &Recovered) -> Result<()> {
    println!("segments: {}", recovered.segments.len());
    for segment in &recovered.segments {
        println!(
            "  {}  first_lsn {}  records {}  used {} of {} bytes",
            segment.path.display(),
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
