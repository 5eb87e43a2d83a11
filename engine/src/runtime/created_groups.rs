//! Groups created at run time (`Node::create_group`): each shard keeps the
//! list of the groups it was asked to create, with their first voters, in a
//! small file in its WAL directory, rewritten atomically (a temporary file,
//! fdatasync, rename, fsync of the directory) before the group exists. A
//! restarted shard reads it and brings those groups back next to the ones
//! `NodeOptions::groups` names; their log is in the shard's WAL like any
//! other group's.
//!
//! A group removed at run time (`Node::remove_group`) stays in the list as
//! `GROUP removed`: a restarted shard does not bring it back (and finishes
//! forgetting it, `group_creation.rs`), and its id is not created again.
//!
//! The file is text, one group a line: `GROUP VOTER,VOTER,...` or
//! `GROUP removed`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::api::Error;
use crate::raft::{GroupId, NodeId};

/// The file's name in the shard's WAL directory.
pub const CREATED_GROUPS_FILE: &str = "created-groups";

/// Bound on the groups a shard keeps as removed (their ids retired): past
/// it, `Node::remove_group` is refused. Each costs a short line of the
/// list, read at every start.
pub const REMOVED_GROUPS_MAX: usize = 1 << 16;

/// What the list says of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Listed {
    /// Created, with these first voters.
    Created(Vec<NodeId>),
    /// Removed: not hosted, its id retired.
    Removed,
}

/// The word that marks a removed group's line.
const REMOVED_WORD: &str = "removed";

/// The groups a shard created at run time, with their first voters, and
/// the ones it removed.
#[derive(Debug)]
pub(crate) struct CreatedGroups {
    path: PathBuf,
    groups: BTreeMap<GroupId, Listed>,
}

impl CreatedGroups {
    /// Reads the list in `shard_dir` (empty if there is no file). A line
    /// that does not parse is an error naming the file and the line.
    pub fn load(shard_dir: &Path) -> Result<CreatedGroups, Error> {
        let path = shard_dir.join(CREATED_GROUPS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(error) => return Err(Error::Storage(format!("reading {}: {error}", path.display()))),
        };
        let mut groups = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let bad = |why: &str| Error::Storage(format!("{} line {}: {why}: {line:?}", path.display(), number + 1));
            let (group, voters) = line.split_once(' ').ok_or_else(|| bad("expected 'GROUP VOTER,...'"))?;
            let group = group.parse::<u64>().map_err(|_| bad("the group is not a number"))?;
            if voters.trim() == REMOVED_WORD {
                groups.insert(GroupId(group), Listed::Removed);
                continue;
            }
            let voters = voters
                .split(',')
                .map(|v| v.trim().parse::<u64>().map(NodeId))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("a voter is not a number"))?;
            groups.insert(GroupId(group), Listed::Created(voters));
        }
        Ok(CreatedGroups { path, groups })
    }

    /// The groups created (and not removed) and their first voters.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &[NodeId])> {
        self.groups.iter().filter_map(|(&g, listed)| match listed {
            Listed::Created(voters) => Some((g, voters.as_slice())),
            Listed::Removed => None,
        })
    }

    /// The groups removed.
    pub fn removed(&self) -> impl Iterator<Item = GroupId> + '_ {
        self.groups
            .iter()
            .filter(|(_, listed)| **listed == Listed::Removed)
            .map(|(&g, _)| g)
    }

    /// The first voters `group` was created with, if it was and is not removed.
    pub fn voters(&self, group: GroupId) -> Option<&[NodeId]> {
        match self.groups.get(&group) {
            Some(Listed::Created(voters)) => Some(voters.as_slice()),
            _ => None,
        }
    }

    /// Whether `group` was removed here.
    pub fn is_removed(&self, group: GroupId) -> bool {
        self.groups.get(&group) == Some(&Listed::Removed)
    }

    /// Adds `group` and makes the list durable before returning.
    pub fn add(&mut self, group: GroupId, voters: &[NodeId]) -> Result<(), Error> {
        self.replace(group, Listed::Created(voters.to_vec()))
    }

    /// Marks `group` removed and makes the list durable before returning;
    /// refused past [`REMOVED_GROUPS_MAX`].
    pub fn remove(&mut self, group: GroupId) -> Result<(), Error> {
        if self.removed().count() >= REMOVED_GROUPS_MAX {
            return Err(Error::Config(format!(
                "group {group}: {} lists {REMOVED_GROUPS_MAX} removed groups already (REMOVED_GROUPS_MAX)",
                self.path.display()
            )));
        }
        self.replace(group, Listed::Removed)
    }

    fn replace(&mut self, group: GroupId, listed: Listed) -> Result<(), Error> {
        let mut next = self.groups.clone();
        next.insert(group, listed);
        self.store(&next)?;
        self.groups = next;
        Ok(())
    }

    fn store(&self, groups: &BTreeMap<GroupId, Listed>) -> Result<(), Error> {
        let failed =
            |what: &str, error: std::io::Error| Error::Storage(format!("{what} {}: {error}", self.path.display()));
        let mut text = String::new();
        for (group, listed) in groups {
            match listed {
                Listed::Created(voters) => {
                    let voters: Vec<String> = voters.iter().map(|v| v.0.to_string()).collect();
                    text.push_str(&format!("{} {}\n", group.0, voters.join(",")));
                }
                Listed::Removed => text.push_str(&format!("{} {REMOVED_WORD}\n", group.0)),
            }
        }
        let temporary = self.path.with_extension("tmp");
        let mut file = std::fs::File::create(&temporary).map_err(|e| failed("creating a new", e))?;
        file.write_all(text.as_bytes())
            .and_then(|_| file.sync_data())
            .map_err(|e| failed("writing a new", e))?;
        std::fs::rename(&temporary, &self.path).map_err(|e| failed("replacing", e))?;
        let directory = self.path.parent().unwrap_or(Path::new("."));
        std::fs::File::open(directory)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("syncing the directory of", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_survives_a_reload_and_a_bad_line_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut list = CreatedGroups::load(dir.path()).unwrap();
        assert_eq!(list.groups().count(), 0);
        list.add(GroupId(7), &[NodeId(1), NodeId(2)]).unwrap();
        list.add(GroupId(9), &[NodeId(3)]).unwrap();
        let reloaded = CreatedGroups::load(dir.path()).unwrap();
        let groups: Vec<_> = reloaded.groups().map(|(g, v)| (g, v.to_vec())).collect();
        assert_eq!(
            groups,
            vec![(GroupId(7), vec![NodeId(1), NodeId(2)]), (GroupId(9), vec![NodeId(3)])]
        );
        // A removed group stays listed as such, and is no longer created.
        list.remove(GroupId(7)).unwrap();
        let reloaded = CreatedGroups::load(dir.path()).unwrap();
        assert!(reloaded.is_removed(GroupId(7)) && !reloaded.is_removed(GroupId(9)));
        assert_eq!(reloaded.voters(GroupId(7)), None);
        assert_eq!(reloaded.groups().map(|(g, _)| g).collect::<Vec<_>>(), [GroupId(9)]);
        assert_eq!(reloaded.removed().collect::<Vec<_>>(), [GroupId(7)]);
        std::fs::write(dir.path().join(CREATED_GROUPS_FILE), "7 1,x\n").unwrap();
        let error = CreatedGroups::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("created-groups line 1") && error.contains("voter"),
            "{error}"
        );
    }
}
