//! The embedding guide quotes real code: every Rust snippet in
//! `docs/embedding.md` starts with a comment naming the file it comes from
//! (`// examples/src/counter.rs`), and the rest of the snippet must appear
//! in that file word for word. The files are compiled and tested, so a
//! snippet that still matches its file still compiles and runs.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the examples crate sits in the workspace")
        .to_path_buf()
}

/// A fenced Rust snippet: the line it starts on and its lines.
struct Snippet {
    line: usize,
    lines: Vec<String>,
}

fn rust_snippets(markdown: &str) -> Vec<Snippet> {
    let mut snippets = Vec::new();
    let mut current: Option<Snippet> = None;
    for (number, line) in markdown.lines().enumerate() {
        match &mut current {
            None if line.starts_with("```rust") => {
                current = Some(Snippet {
                    line: number + 1,
                    lines: Vec::new(),
                })
            }
            None => {}
            Some(_) if line.starts_with("```") => snippets.push(current.take().expect("open")),
            Some(snippet) => snippet.lines.push(line.to_string()),
        }
    }
    assert!(current.is_none(), "a Rust snippet is not closed");
    snippets
}

/// Why `snippet` does not match its file, if it does not.
fn mismatch(root: &Path, snippet: &Snippet) -> Option<String> {
    let Some(source) = snippet.lines.first().and_then(|l| l.strip_prefix("// ")) else {
        return Some("does not start with `// FILE` naming the file it quotes".into());
    };
    let text = match std::fs::read_to_string(root.join(source)) {
        Ok(text) => text,
        Err(error) => return Some(format!("names {source}, which cannot be read: {error}")),
    };
    let quoted = snippet.lines[1..].join("\n");
    if quoted.trim().is_empty() {
        return Some(format!("quotes nothing from {source}"));
    }
    if text.contains(&quoted) {
        return None;
    }
    // Name the first line that is not in the file, to make a fix quick.
    let missing = snippet.lines[1..]
        .iter()
        .find(|l| !text.contains(l.as_str()))
        .map_or("(each line is, but not in this order)".to_string(), |l| {
            l.trim().to_string()
        });
    Some(format!(
        "is not a verbatim part of {source}; first line not found: {missing}"
    ))
}

#[test]
fn every_rust_snippet_of_the_embedding_guide_is_quoted_word_for_word_from_a_real_file() {
    let root = workspace();
    let guide = std::fs::read_to_string(root.join("docs/embedding.md")).expect("docs/embedding.md");
    let snippets = rust_snippets(&guide);
    assert!(snippets.len() >= 10, "only {} Rust snippets found", snippets.len());
    let failures: Vec<String> = snippets
        .iter()
        .filter_map(|s| mismatch(&root, s).map(|why| format!("docs/embedding.md:{}: the snippet {why}", s.line)))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_snippet_that_differs_from_its_file_is_caught() {
    let root = workspace();
    let good = Snippet {
        line: 1,
        lines: vec![
            "// examples/src/counter.rs".into(),
            "    fn on_query(&self, _query: &[u8]) -> Vec<u8> {".into(),
            "        self.value.to_le_bytes().to_vec()".into(),
        ],
    };
    assert_eq!(mismatch(&root, &good), None);
    let edited = Snippet {
        line: 1,
        lines: vec![
            "// examples/src/counter.rs".into(),
            "    fn on_query(&self, _query: &[u8]) -> Vec<u8> {".into(),
            "        self.value.to_be_bytes().to_vec()".into(),
        ],
    };
    assert!(mismatch(&root, &edited).unwrap().contains("to_be_bytes"));
    let unnamed = Snippet {
        line: 1,
        lines: vec!["let x = 1;".into()],
    };
    assert!(mismatch(&root, &unnamed).unwrap().contains("// FILE"));
}
