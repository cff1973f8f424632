//! The repository's shape, as docs/architecture.md and the README promise it: files of at most
//! 350 lines, a short README, documentation links that resolve, and modules that import only
//! the modules listed before them in the tour of `src/lib.rs`.

use std::{
    collections::HashSet,
    fs,
    path::{Path, PathBuf},
};

const MAX_LINES: usize = 350;
const README_MAX_LINES: usize = 150;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn files_under(dir: &Path, ext: &str, into: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, ext, into);
        } else if path.extension().is_some_and(|e| e == ext) {
            into.push(path);
        }
    }
}

#[test]
fn every_source_file_is_at_most_350_lines() {
    let mut files = Vec::new();
    for dir in ["src", "tests", "examples", "clients/rust/src"] {
        files_under(&root().join(dir), "rs", &mut files);
    }
    // The TypeScript client and the page's scripts too.
    files_under(&root().join("clients/typescript/src"), "ts", &mut files);
    files_under(&root().join("src/http/page"), "js", &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).unwrap().lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines})", f.strip_prefix(root()).unwrap().display()))
        })
        .collect();
    assert!(files.len() > 50, "found the sources");
    assert!(long.is_empty(), "split by job: {long:?}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(markdown: &str) -> HashSet<String> {
    markdown.lines().filter_map(|l| l.strip_prefix('#')).map(|h| anchor(h.trim_start_matches('#'))).collect()
}

/// The targets of `[text](target)` links in `markdown`.
fn links(markdown: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            found.push(rest[..end].to_string());
        }
    }
    found
}

#[test]
fn the_readme_is_short_and_every_relative_link_in_the_docs_resolves() {
    let readme = fs::read_to_string(root().join("README.md")).unwrap();
    assert!(readme.lines().count() <= README_MAX_LINES, "README: at most {README_MAX_LINES} lines");
    let mut pages = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    files_under(&root().join("docs"), "md", &mut pages);
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in &pages {
        let text = fs::read_to_string(page).unwrap();
        for target in links(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (file, fragment) = target.split_once('#').unwrap_or((&target, ""));
            let resolved = if file.is_empty() { page.clone() } else { page.parent().unwrap().join(file) };
            let ok = resolved.exists()
                && (fragment.is_empty()
                    || anchors(&fs::read_to_string(&resolved).unwrap_or_default()).contains(fragment));
            if !ok {
                broken.push(format!("{}: {target}", page.strip_prefix(root()).unwrap().display()));
            }
        }
    }
    assert!(checked > 20, "found the links ({checked})");
    assert!(broken.is_empty(), "links that resolve to nothing: {broken:#?}");
}

/// The modules in the order of the tour in `src/lib.rs` (`//! - \`name\`: ...`), bottom first.
fn ladder() -> Vec<String> {
    let lib = fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - `"))
        .filter_map(|l| l.split_once('`').map(|(name, _)| name.to_string()))
        .collect()
}

/// The crate's top-level modules that `source` names: `crate::x` paths and `use crate::{x, ..}`.
fn imports(source: &str) -> HashSet<String> {
    let mut found = HashSet::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(list) = rest.strip_prefix('{') {
            // `use crate::{a::b, c, d::{e, f}}`: the first segment of each top-level item.
            let (mut depth, mut item_start) = (0, true);
            for (i, c) in list.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        rest = &list[i..];
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => item_start = true,
                    c if item_start && (c.is_alphanumeric() || c == '_') => {
                        let name: String =
                            list[i..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                        found.insert(name);
                        item_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect());
        }
    }
    found
}

#[test]
fn no_module_imports_one_listed_after_it_in_the_tour() {
    let ladder = ladder();
    assert!(ladder.len() >= 15 && ladder[0] == "model", "the tour lists the modules: {ladder:?}");
    let mut upward = Vec::new();
    for (rank, module) in ladder.iter().enumerate() {
        let mut files = Vec::new();
        let dir = root().join("src").join(module);
        if dir.is_dir() {
            files_under(&dir, "rs", &mut files);
        } else {
            files.push(root().join("src").join(format!("{module}.rs")));
        }
        for file in files {
            // Comments may name any module (a doc link is no import).
            let source: String = fs::read_to_string(&file)
                .unwrap()
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for name in imports(&source) {
                match ladder.iter().position(|m| *m == name) {
                    Some(at) if at > rank => upward
                        .push(format!("{} imports `{name}`", file.strip_prefix(root()).unwrap().display())),
                    Some(_) => {}
                    None => assert!(
                        ["self", "super"].contains(&name.as_str()) || name.chars().all(|c| c.is_uppercase()),
                        "{}: `crate::{name}` is a module the tour does not list",
                        file.display()
                    ),
                }
            }
        }
    }
    assert!(upward.is_empty(), "layers import downward: {upward:#?}");
}
