//! The Linux "cpulist" format (`0-3,8,10-11`) sysfs uses for sets of CPUs.
//!
//! Topology detection reads it; messages print it. Parsing refuses anything
//! odd (reversed ranges, stride syntax, ids past [`CPU_ID_LIMIT`]) instead of
//! guessing, so a malformed file turns into a fallback, never a panic or a
//! huge allocation.

use crate::limits::CPU_ID_LIMIT;

/// Parses a cpulist into sorted, deduplicated CPU ids. Whitespace around the
/// list is ignored; an empty list is an empty set.
pub(crate) fn parse(text: &str) -> Result<Vec<usize>, String> {
    let text = text.trim();
    let mut cpus = Vec::new();
    if text.is_empty() {
        return Ok(cpus);
    }
    for part in text.split(',') {
        let part = part.trim();
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (id(first)?, id(last)?),
            None => {
                let only = id(part)?;
                (only, only)
            }
        };
        if first > last {
            return Err(format!("reversed range {part:?}"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn id(text: &str) -> Result<usize, String> {
    let cpu: usize = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a CPU number"))?;
    if cpu >= CPU_ID_LIMIT {
        return Err(format!("CPU {cpu} is beyond the limit {CPU_ID_LIMIT}"));
    }
    Ok(cpu)
}

/// Formats CPU ids as a cpulist, collapsing runs: `[0, 1, 2, 5]` → `0-2,5`.
pub(crate) fn format(cpus: &[usize]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut parts = Vec::new();
    let mut index = 0;
    while index < sorted.len() {
        let first = sorted[index];
        let mut last = first;
        while index + 1 < sorted.len() && sorted[index + 1] == last + 1 {
            index += 1;
            last = sorted[index];
        }
        parts.push(if first == last {
            first.to_string()
        } else {
            format!("{first}-{last}")
        });
        index += 1;
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_singles_parse_sorted_and_deduplicated() {
        assert_eq!(parse("8,0-3,2\n").unwrap(), vec![0, 1, 2, 3, 8]);
        assert_eq!(parse("  \n").unwrap(), Vec::<usize>::new());
    }

    #[test]
    fn malformed_lists_are_refused_not_guessed() {
        assert!(parse("3-1").is_err());
        assert!(parse("0-15:2/4").is_err());
        assert!(parse("a").is_err());
        assert!(parse("0-4294967295").is_err(), "a huge range must not allocate");
        assert!(parse("0,,1").is_err());
    }

    #[test]
    fn formatting_collapses_runs() {
        assert_eq!(format(&[5, 0, 1, 2, 7, 8]), "0-2,5,7-8");
        assert_eq!(format(&[]), "none");
        assert_eq!(parse(&format(&[3, 4, 9])).unwrap(), vec![3, 4, 9]);
    }
}
