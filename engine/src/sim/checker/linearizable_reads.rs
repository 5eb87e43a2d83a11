//! Linearizable reads: a read returns state at least as new as every write
//! acknowledged before the read began (Raft thesis §6.4). A read is confirmed
//! at a read index; that index must cover every such write.

use crate::raft::LogIndex;

/// Counts reads checked.
#[derive(Default)]
pub struct LinearizableReads {
    confirmed: u64,
}

impl LinearizableReads {
    /// A read that began when the highest acknowledged write was at `floor`
    /// was confirmed at `read_index`.
    pub fn on_confirmed(
        &mut self,
        node: u64,
        context: u64,
        floor: LogIndex,
        read_index: LogIndex,
    ) -> Result<(), String> {
        self.confirmed += 1;
        if read_index < floor {
            return Err(format!(
                "linearizable reads: read {context} on node {node} confirmed at index {read_index}, \
                 but a write at {floor} was acknowledged before it began"
            ));
        }
        Ok(())
    }

    /// Reads confirmed so far.
    pub fn confirmed(&self) -> u64 {
        self.confirmed
    }
}
