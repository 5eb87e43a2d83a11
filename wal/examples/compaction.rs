//! Compaction in a real WAL directory, to look at with `coraft-wal inspect`:
//! three groups append interleaved entries over several segments; groups 1
//! and 3 purge most of their log (as after a snapshot), group 2 lags and
//! purges nothing, so no segment can be deleted. With `catch-up`, group 2
//! then purges too (its snapshot is durable) and the old segments go.
//!
//! ```sh
//! rm -rf /tmp/wal-compaction
//! cargo run -p coraft-wal --example compaction -- /tmp/wal-compaction
//! cargo run -p coraft-wal --bin coraft-wal -- inspect /tmp/wal-compaction
//! cargo run -p coraft-wal --example compaction -- /tmp/wal-compaction catch-up
//! cargo run -p coraft-wal --bin coraft-wal -- inspect /tmp/wal-compaction
//! ```

use std::path::PathBuf;

use coraft_wal::{Config, Wal};
use glommio::{LocalExecutorBuilder, Placement};

/// Entries each group appends.
const ENTRIES: u64 = 600;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: compaction DIR [catch-up]")?);
    let catch_up = args.next().as_deref() == Some("catch-up");
    let config = Config {
        segment_bytes: 64 << 10,
        record_bytes_max: 16 << 10,
        batch_bytes_max: 32 << 10,
        ..Config::default()
    };
    let executor = LocalExecutorBuilder::new(Placement::Unbound).make()?;
    executor.run(async move {
        let (wal, _) = Wal::open(&dir, config).await?;
        if catch_up {
            // Group 2's snapshot at its last entry is durable: purge up to it.
            let state = wal.group_state(2).ok_or("no group 2: run without catch-up first")?;
            let term = wal.term(2, state.last_index).ok_or("group 2 has no last entry")?;
            wal.purge(2, state.last_index, term)?;
        } else {
            for index in 1..=ENTRIES {
                for group in [1, 2, 3] {
                    wal.append_entry(group, index, 1, 0, &[index as u8; 100])?;
                }
            }
            wal.purge(1, ENTRIES - 50, 1)?;
            wal.purge(3, ENTRIES - 10, 1)?;
        }
        let deleted = wal.delete_obsolete_segments().await?;
        println!("deleted segments {deleted:?}");
        if let Some(oldest) = wal.segment_holders(1).first() {
            for holder in &oldest.holders {
                println!(
                    "segment {} held by group {}: {:?} at lsn {}",
                    oldest.segment, holder.group, holder.need, holder.lsn
                );
            }
        }
        wal.close().await?;
        Ok::<(), Box<dyn std::error::Error>>(())
    })
}
