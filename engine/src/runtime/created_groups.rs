//! Groups created at run time (`Node::create_group`): each shard keeps the
//! list of the groups it was asked to create, with their first voters, in a
//! small file in its WAL directory, rewritten atomically (a temporary file,
//! fdatasync, rename, fsync of the directory) before the group exists. A
//! restarted shard reads it and brings those groups back next to the ones
//! `NodeOptions::groups` names; their log is in the shard's WAL like any
//! other group's.
//!
//! The file is text, one group a line: `GROUP VOTER,VOTER,...`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::api::Error;
use crate::raft::{GroupId, NodeId};

/// The file's name in the shard's WAL directory.
pub const CREATED_GROUPS_FILE: &str = "created-groups";

/// The groups a shard created at run time, and their first voters.
#[derive(Debug)]
pub(crate) struct CreatedGroups {
    path: PathBuf,
    groups: BTreeMap<GroupId, Vec<NodeId>>,
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
            let voters = voters
                .split(',')
                .map(|v| v.trim().parse::<u64>().map(NodeId))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|_| bad("a voter is not a number"))?;
            groups.insert(GroupId(group), voters);
        }
        Ok(CreatedGroups { path, groups })
    }

    /// The groups and their first voters.
    pub fn groups(&self) -> impl Iterator<Item = (GroupId, &[NodeId])> {
        self.groups.iter().map(|(&g, v)| (g, v.as_slice()))
    }

    /// The first voters `group` was created with, if it was.
    pub fn voters(&self, group: GroupId) -> Option<&[NodeId]> {
        self.groups.get(&group).map(Vec::as_slice)
    }

    /// Adds `group` and makes the list durable before returning.
    pub fn add(&mut self, group: GroupId, voters: &[NodeId]) -> Result<(), Error> {
        let mut next = self.groups.clone();
        next.insert(group, voters.to_vec());
        self.store(&next)?;
        self.groups = next;
        Ok(())
    }

    fn store(&self, groups: &BTreeMap<GroupId, Vec<NodeId>>) -> Result<(), Error> {
        let failed =
            |what: &str, error: std::io::Error| Error::Storage(format!("{what} {}: {error}", self.path.display()));
        let mut text = String::new();
        for (group, voters) in groups {
            let voters: Vec<String> = voters.iter().map(|v| v.0.to_string()).collect();
            text.push_str(&format!("{} {}\n", group.0, voters.join(",")));
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
        std::fs::write(dir.path().join(CREATED_GROUPS_FILE), "7 1,x\n").unwrap();
        let error = CreatedGroups::load(dir.path()).unwrap_err().to_string();
        assert!(
            error.contains("created-groups line 1") && error.contains("voter"),
            "{error}"
        );
    }
}
