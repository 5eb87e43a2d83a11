//! A ready-made state machine that counts the commands it applied: what the
//! benchmark harness, `coraft-node` and quick experiments replicate when the
//! state itself does not matter.

use super::state_machine::{apply_via_results, ApplyResults, Command, StateMachine};

/// Counts applied commands; each command's result, and every query's answer,
/// is the count so far as 8 little-endian bytes.
#[derive(Debug, Default)]
pub struct CommandCounter {
    applied: u64,
}

impl CommandCounter {
    /// Commands applied so far.
    pub fn applied(&self) -> u64 {
        self.applied
    }
}

impl StateMachine for CommandCounter {
    fn on_apply(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>) -> Vec<Vec<u8>> {
        apply_via_results(self, commands)
    }

    fn on_apply_into(&mut self, commands: &mut dyn Iterator<Item = Command<'_>>, out: &mut ApplyResults) {
        for _ in commands {
            self.applied += 1;
            // Eight bytes, one per command: never past a bound.
            let _ = out.push(&self.applied.to_le_bytes());
        }
    }

    fn on_query(&self, _query: &[u8]) -> Vec<u8> {
        self.applied.to_le_bytes().to_vec()
    }

    fn on_query_into(&self, _query: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&self.applied.to_le_bytes())
    }

    fn on_snapshot_save(&mut self, writer: &mut dyn std::io::Write) -> std::io::Result<()> {
        writer.write_all(&self.applied.to_le_bytes())
    }

    fn on_snapshot_load(&mut self, reader: &mut dyn std::io::Read) -> std::io::Result<()> {
        let mut bytes = [0u8; 8];
        reader.read_exact(&mut bytes)?;
        self.applied = u64::from_le_bytes(bytes);
        Ok(())
    }
}
