//! The layers of `src/` hold: every `crate::…` path in a file names a module of a lower
//! layer (or of the same directory), except the one named back-edge `page.rs -> heap.rs`.
//! The layer order is the table of `src/lib.rs`; this test reads the sources, so a new
//! upward import fails here with the file and the path that makes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The files of each row of a layer table (Markdown rows `| layer | files |`), top row
/// first: every backticked name that ends in `.rs` or `/`, without a leading `src/`.
fn table_rows<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in lines {
        let line = line.trim_start_matches("//!").trim();
        if !line.starts_with('|') || line.starts_with("|---") || line.starts_with("| layer") {
            continue;
        }
        let files: Vec<String> = line
            .split('`')
            .skip(1)
            .step_by(2)
            .filter(|t| t.ends_with(".rs") || t.ends_with('/'))
            .map(|t| t.trim_start_matches("src/").to_string())
            .collect();
        if !files.is_empty() {
            rows.push(files);
        }
    }
    rows
}

/// The layer rank of each file of `src/` (or directory, for its files): the row of the
/// layer table of `src/lib.rs` counted from the bottom, then the place in the row. A file
/// may import files of lower rank (and its own directory's files).
fn ranks(root: &Path) -> Vec<(String, (usize, usize))> {
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let rows = table_rows(lib.lines().take_while(|l| l.starts_with("//!")));
    assert!(
        rows.len() >= 10,
        "the layer table of src/lib.rs was not found"
    );
    let n = rows.len();
    let mut out = Vec::new();
    for (r, files) in rows.into_iter().enumerate() {
        for (i, f) in files.into_iter().enumerate() {
            out.push((f, (n - 1 - r, i)));
        }
    }
    // the crate root re-exports from every layer
    out.push(("lib.rs".to_string(), (n, 0)));
    out
}

/// The one deliberate upward edge (a page knows its owning heap, for delayed frees).
const BACK_EDGE: (&str, &str) = ("page.rs", "heap.rs");

fn rank(ranks: &[(String, (usize, usize))], file: &str) -> ((usize, usize), String) {
    for (name, r) in ranks {
        if file == name || (name.ends_with('/') && file.starts_with(name.as_str())) {
            return (*r, name.clone());
        }
    }
    // a directory's files may be named one by one in the table
    let dir = file.rsplit_once('/').map(|(d, _)| format!("{d}/"));
    if let Some(dir) = dir {
        for (name, r) in ranks {
            if name.starts_with(&dir) {
                return (*r, dir.clone());
            }
        }
    }
    panic!("src/{file}: not in the layer table of src/lib.rs");
}

fn rs_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rs_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and string/char literals (so that paths in them do not
/// count).
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if c == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if c == b'r'
            && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#'))
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b[i - 1] == b'_'))
        {
            // raw string r"..." / r#"..."#
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(c as char);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == b'"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&b'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == b'\'' && b.get(i + 2) == Some(&b'\'') {
            out.push_str("' '");
            i += 3;
        } else if c == b'\'' && b.get(i + 1) == Some(&b'\\') {
            // '\n', '\x7f', '\u{..}'
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else {
            out.push(c as char);
            i += 1;
        }
    }
    out
}

fn ident(s: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < s.len() && (s[i].is_ascii_alphanumeric() || s[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&s[start..i]).into_owned(), i)
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Parses the path after `crate::` at `i` into the module paths it names (a `{..}` group
/// names several). Returns them as segment lists.
fn paths(s: &[u8], i: usize, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let mut i = skip_ws(s, i);
    if s.get(i) == Some(&b'{') {
        i += 1;
        loop {
            i = skip_ws(s, i);
            match s.get(i) {
                Some(b'}') => return i + 1,
                Some(b',') => i += 1,
                None => return i,
                _ => {
                    let before = i;
                    i = paths(s, i, prefix.clone(), out);
                    if i == before {
                        i += 1;
                    }
                }
            }
        }
    }
    let mut segs = prefix;
    loop {
        let (id, j) = ident(s, i);
        if id.is_empty() {
            out.push(segs);
            return i;
        }
        segs.push(id);
        i = skip_ws(s, j);
        if s.get(i) == Some(&b':') && s.get(i + 1) == Some(&b':') {
            i = skip_ws(s, i + 2);
            if s.get(i) == Some(&b'{') {
                return paths(s, i, segs, out);
            }
        } else {
            out.push(segs);
            return i;
        }
    }
}

#[test]
fn core_layers_point_down() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ranks = ranks(root);
    let src = root.join("src");
    let mut files = Vec::new();
    rs_files(&src, &mut files);
    // the path of a file of `src/`, with `/` separators
    let rel_path = |f: &Path| {
        f.strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/")
    };
    // module path ("global::hosted") -> file ("global/hosted.rs")
    let mut modules: BTreeMap<String, String> = BTreeMap::new();
    for f in &files {
        let rel = rel_path(f);
        let m = rel
            .trim_end_matches(".rs")
            .trim_end_matches("/mod")
            .replace('/', "::");
        modules.insert(m, rel);
    }
    let mut edges: BTreeSet<(String, String, String)> = BTreeSet::new();
    for f in &files {
        let rel = rel_path(f);
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let s = code.as_bytes();
        let mut at = 0;
        while let Some(k) = code[at..].find("crate::") {
            let pos = at + k;
            at = pos + 7;
            if pos > 0 && (s[pos - 1].is_ascii_alphanumeric() || s[pos - 1] == b'_') {
                continue; // e.g. `$crate::`, `my_crate::`
            }
            let mut found = Vec::new();
            paths(s, at, Vec::new(), &mut found);
            for segs in found {
                // the longest prefix that is a module; items of the crate root are lib.rs
                let target = (1..=segs.len())
                    .rev()
                    .find_map(|n| modules.get(&segs[..n].join("::")).cloned())
                    .unwrap_or_else(|| "lib.rs".to_string());
                if target != rel {
                    edges.insert((rel.clone(), target, segs.join("::")));
                }
            }
        }
    }
    let mut wrong = Vec::new();
    let mut back_edge_seen = false;
    let mut listed = BTreeSet::new();
    for (from, to, path) in &edges {
        listed.insert(format!("{from} -> {to}"));
        let (rf, gf) = rank(&ranks, from);
        let (rt, gt) = rank(&ranks, to);
        // files of one subdirectory (global/, c_api/, source/) may use each other
        let dir = |f: &str| f.rsplit_once('/').map(|(d, _)| d.to_string());
        let same_dir =
            (gf.ends_with('/') && gf == gt) || (dir(from).is_some() && dir(from) == dir(to));
        if (from.as_str(), to.as_str()) == BACK_EDGE {
            back_edge_seen = true;
            continue;
        }
        if !(rt < rf || same_dir) {
            wrong.push(format!("{from} -> {to} (crate::{path})"));
        }
    }
    eprintln!("{} edges between files of src/:", listed.len());
    for e in &listed {
        eprintln!("  {e}");
    }
    // the parser really saw the code: the core's known edges are there
    assert!(
        listed.len() > 60,
        "only {} edges found: parser broken?",
        listed.len()
    );
    assert!(
        back_edge_seen,
        "the named back-edge page.rs -> heap.rs was not found"
    );
    for must in [
        "alloc.rs -> free.rs",
        "segment.rs -> os.rs",
        "thread.rs -> abandon.rs",
    ] {
        assert!(
            listed.contains(must),
            "edge {must} not found: parser broken?"
        );
    }
    assert!(
        wrong.is_empty(),
        "imports pointing up a layer:\n{}",
        wrong.join("\n")
    );
}

/// README's layer table names the same files, in the same order, as `src/lib.rs`'s.
#[test]
fn readme_layer_table_matches_lib_rs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let lib = std::fs::read_to_string(root.join("src/lib.rs")).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let lib_files: Vec<String> =
        table_rows(lib.lines().take_while(|l| l.starts_with("//!"))).concat();
    let start = readme
        .find("| layer | files |")
        .expect("README has no layer table");
    let readme_files: Vec<String> =
        table_rows(readme[start..].lines().take_while(|l| l.starts_with('|'))).concat();
    assert!(lib_files.len() >= 15, "lib.rs table: {lib_files:?}");
    // README may describe a directory by naming some of its files: compare by directory
    let norm = |v: &[String]| -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in v {
            let key = match f.split_once('/') {
                Some((d, _)) => format!("{d}/"),
                None => f.clone(),
            };
            if out.last() != Some(&key) {
                out.push(key);
            }
        }
        out
    };
    assert_eq!(
        norm(&readme_files),
        norm(&lib_files),
        "README's layer table differs from src/lib.rs's"
    );
}
