//! Tidy checks: every source file opens with a `//!` module doc, and the layering rules of
//! ARCHITECTURE.md hold: crate names (actix, actix_web, rusqlite) are checked by grepping, and
//! the dependencies between files on a graph built by a small path resolver (`mod deps` below):
//! no import cycle between files, and every reference points down the layer table
//! (`LAYER_RULES`). `mod resolver_tests` tests the resolver on in-memory files.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(directory: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(directory).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Source lines without comments, so prose may name anything.
fn code_of(path: &Path) -> String {
    fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for directory in ["src", "tests", "benches"] {
        let directory = root().join(directory);
        if !directory.exists() {
            continue;
        }
        for file in rust_files(&directory) {
            let text = fs::read_to_string(&file).unwrap();
            if !text.trim_start().starts_with("//!") {
                missing.push(file.display().to_string());
            }
        }
    }
    assert!(
        missing.is_empty(),
        "files without a `//!` module doc: {missing:#?}"
    );
}

fn assert_layer(layer: &str, forbidden: &[&str]) {
    for file in rust_files(&root().join("src").join(layer)) {
        let code = code_of(&file);
        for name in forbidden {
            assert!(
                !code.contains(name),
                "{} uses {name}, which its layer must not",
                file.display()
            );
        }
    }
}

#[test]
fn domain_and_engines_know_nothing_of_actors_http_or_sqlite() {
    let forbidden = [
        "actix",
        "rusqlite",
        "crate::storage",
        "crate::actors",
        "crate::http",
        "crate::error",
    ];
    assert_layer("domain", &forbidden);
    assert_layer("engine", &forbidden);
    assert_layer("domain", &["crate::engine", "tokio"]);
}

#[test]
fn only_the_sqlite_backend_names_rusqlite_and_only_startup_names_a_backend() {
    let backends = [
        (
            root().join("src/storage/sqlite"),
            ["storage::sqlite", "SqliteStore"],
        ),
        (
            root().join("src/engine/toml"),
            ["engine::toml", "TomlEngine"],
        ),
    ];
    for file in rust_files(&root().join("src")) {
        let code = code_of(&file);
        if !file.starts_with(&backends[0].0) {
            assert!(
                !code.contains("rusqlite"),
                "{} names rusqlite",
                file.display()
            );
        }
        for (folder, names) in &backends {
            let names_backend = names.iter().any(|name| code.contains(name));
            assert!(
                !names_backend || file.starts_with(folder) || file.ends_with("src/startup.rs"),
                "{} names the backend in {}; only startup.rs may",
                file.display(),
                folder.display()
            );
        }
    }
}

#[test]
fn only_http_error_and_startup_name_actix_web() {
    for file in rust_files(&root().join("src")) {
        let relative = file
            .strip_prefix(root().join("src"))
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let allowed = relative.starts_with("http/")
            || relative == "error.rs"
            || relative == "startup.rs"
            || relative == "main.rs";
        if !allowed {
            assert!(
                !code_of(&file).contains("actix_web"),
                "{relative} names actix_web"
            );
        }
    }
}

#[test]
fn storage_does_not_reach_up_into_actors_or_http() {
    assert_layer(
        "storage",
        &[
            "crate::actors",
            "crate::http",
            "crate::engine",
            "crate::error",
        ],
    );
    assert_layer("actors", &["crate::http", "crate::error"]);
}

// ---------------------------------------------------------------------------------------------
// File-level dependencies: which file names which, no cycle between files, layers point one way.
// ---------------------------------------------------------------------------------------------

/// The layers of the target architecture (ARCHITECTURE.md), by top-level module under `src/`,
/// each with the modules it must not name. An entry is a module path prefix: `storage` forbids
/// every file under `src/storage/`, `storage::sqlite` only the SQLite backend. A module that
/// does not exist (yet) matches nothing, so the table is written for the target names. Every
/// top-level module must have a row; a layer may always name itself.
#[rustfmt::skip] // One row per layer reads as a table.
const LAYER_RULES: &[(&str, &[&str])] = &[
    // The vocabulary: names no other layer.
    ("domain", &["stream", "storage", "engine", "actors", "http", "error", "retention", "config", "startup"]),
    // May name only `domain`.
    ("stream", &["storage", "engine", "actors", "http", "error", "retention", "config", "startup"]),
    // The two seams: may name `domain` and `stream`; not each other, nothing above them.
    ("storage", &["engine", "actors", "http", "error", "retention", "config", "startup"]),
    ("engine", &["storage", "actors", "http", "error", "retention", "config", "startup"]),
    // May name `domain`, `stream`, `storage`, `engine`, `config`: the seams, never a backend.
    ("actors", &["http", "error", "retention", "startup", "storage::sqlite", "engine::toml"]),
    // Like `actors`: the same five layers, never a backend.
    ("retention", &["actors", "http", "error", "startup", "storage::sqlite", "engine::toml"]),
    // Anything but the wiring and the backends.
    ("http", &["startup", "storage::sqlite", "engine::toml"]),
    // May name `domain`, `storage`, `actors`, `engine` (the errors it renders).
    ("error", &["stream", "http", "retention", "config", "startup"]),
    // May name `domain` and `stream`.
    ("config", &["storage", "engine", "actors", "http", "error", "retention", "startup"]),
    // The wiring: names anything, the backends included.
    ("startup", &[]),
];

/// Module paths checked under another name, `(today, target)`: a file of `today` is in the
/// target's layer, and naming `today::x` counts as naming `target::x`.
const LAYER_ALIASES: &[(&str, &str)] = &[];

fn crate_graph() -> deps::Graph {
    let sources = rust_files(&root().join("src"))
        .into_iter()
        .map(|file| {
            let relative = file.strip_prefix(root()).unwrap().to_string_lossy();
            let relative = relative.replace('\\', "/");
            (relative, fs::read_to_string(&file).unwrap())
        })
        .collect::<Vec<_>>();
    deps::Graph::build(&sources)
}

#[test]
fn there_is_no_import_cycle_between_files() {
    let report = crate_graph().cycle_report();
    assert!(report.is_empty(), "{report}");
}

#[test]
fn dependencies_point_one_way() {
    let violations = crate_graph().layer_violations(LAYER_RULES, LAYER_ALIASES);
    assert!(
        violations.is_empty(),
        "{} reference(s) against the layer rules (LAYER_RULES in tests/tidy.rs):\n\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// A module-path resolver and a file dependency graph over `src/**/*.rs`, from the source text
/// alone (no compiler, no crates): good enough for tidy checks on this codebase, not a Rust
/// name resolver. What it does:
///
/// 1. Maps each file to its module path: `src/lib.rs` is the crate root, `src/a/mod.rs` is `a`,
///    `src/a/b.rs` is `a::b`; `src/main.rs` (the binary) is left out.
/// 2. Blanks comments and string and char literals, keeping line breaks, then splits the code
///    into tokens with their line numbers.
/// 3. Collects the paths the code names: every leaf of every `use` tree (grouped, nested,
///    multi-line, `pub use` alike) and every inline path `a::b::c` outside them. `mod x;` is
///    structure, not use, and names nothing. Inline `mod tests { … }` blocks are tracked, so a
///    `use super::*` inside one names its own file; what test code names counts like the rest.
/// 4. Makes each path absolute (`crate::`, `self::`, `super::`, or a bare path starting with a
///    child module of the current module; anything else is another crate or a local item) and
///    resolves it to the file of its longest prefix that names a module file. An item
///    re-exported by a `mod.rs` therefore resolves to that `mod.rs`: re-exports are not
///    followed, on purpose.
/// 5. Keeps an edge A → B for every resolved path with A ≠ B, with the line that makes it.
mod deps {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    /// One source file of the crate.
    pub struct SourceFile {
        /// Relative to the crate root, `/`-separated: `src/actors/run.rs`.
        pub path: String,
        /// `[]` for `src/lib.rs`, `[a]` for `src/a/mod.rs`, `[a, b]` for `src/a/b.rs`.
        pub module: Vec<String>,
        text: String,
    }

    impl SourceFile {
        /// Line `number` (from 1) of the original text, trimmed.
        pub fn line(&self, number: usize) -> &str {
            self.text.lines().nth(number - 1).unwrap_or("").trim()
        }
    }

    /// `from` names `to` on line `line` of `from` (indices into `Graph::files`).
    #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Reference {
        pub from: usize,
        pub to: usize,
        pub line: usize,
    }

    /// How many of the lines that make one edge a cycle report shows.
    const LINES_PER_EDGE: usize = 3;

    /// The files of the crate and the references between them.
    pub struct Graph {
        /// Sorted by path.
        pub files: Vec<SourceFile>,
        /// Sorted, one per (from, to, line).
        pub references: Vec<Reference>,
    }

    /// The module path of a file given by its path relative to the crate root, `None` for a file
    /// that is not part of the library (the binary).
    pub fn module_path(path: &str) -> Option<Vec<String>> {
        let inner = path.strip_prefix("src/")?.strip_suffix(".rs")?;
        if inner == "main" || inner.starts_with("bin/") {
            return None;
        }
        if inner == "lib" {
            return Some(Vec::new());
        }
        let mut segments: Vec<String> = inner.split('/').map(str::to_owned).collect();
        if segments.len() > 1 && segments.last().is_some_and(|last| last == "mod") {
            segments.pop();
        }
        Some(segments)
    }

    impl Graph {
        /// Builds the graph from `(path relative to the crate root, text)` pairs.
        pub fn build(sources: &[(String, String)]) -> Graph {
            let mut files: Vec<SourceFile> = sources
                .iter()
                .filter_map(|(path, text)| {
                    Some(SourceFile {
                        path: path.clone(),
                        module: module_path(path)?,
                        text: text.clone(),
                    })
                })
                .collect();
            files.sort_by(|a, b| a.path.cmp(&b.path));
            let modules: BTreeMap<Vec<String>, usize> = files
                .iter()
                .enumerate()
                .map(|(index, file)| (file.module.clone(), index))
                .collect();
            let mut references = BTreeSet::new();
            for (from, file) in files.iter().enumerate() {
                let tokens = tokenize(&blank_comments_and_literals(&file.text));
                for named in named_paths(&tokens) {
                    let mut current = file.module.clone();
                    current.extend(named.scope);
                    if let Some((to, line)) = resolve(&modules, &current, &named.path) {
                        if to != from {
                            references.insert(Reference { from, to, line });
                        }
                    }
                }
            }
            Graph {
                files,
                references: references.into_iter().collect(),
            }
        }

        /// The index of the file at `path`, if any.
        pub fn file(&self, path: &str) -> Option<usize> {
            self.files.iter().position(|file| file.path == path)
        }

        /// The distinct files each file names, by index.
        pub fn successors(&self) -> Vec<Vec<usize>> {
            let mut successors = vec![Vec::new(); self.files.len()];
            for reference in &self.references {
                let list: &mut Vec<usize> = &mut successors[reference.from];
                if list.last() != Some(&reference.to) && !list.contains(&reference.to) {
                    list.push(reference.to);
                }
            }
            successors
        }

        /// The strongly connected components of more than one file: each is a set of files
        /// that name each other in a cycle. Members sorted; components sorted by first member.
        pub fn cycles(&self) -> Vec<Vec<usize>> {
            let mut cycles: Vec<Vec<usize>> = strongly_connected_components(&self.successors())
                .into_iter()
                .filter(|component| component.len() > 1)
                .collect();
            cycles.sort();
            cycles
        }

        /// A shortest cycle through the first file of `component`, as the files along it with
        /// the first repeated at the end.
        fn example_cycle(&self, component: &[usize]) -> Vec<usize> {
            let successors = self.successors();
            let start = component[0];
            let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
            let mut queue = VecDeque::from([start]);
            while let Some(node) = queue.pop_front() {
                for &next in &successors[node] {
                    if !component.contains(&next) || parent.contains_key(&next) {
                        continue;
                    }
                    parent.insert(next, node);
                    if next == start {
                        let mut path = vec![start];
                        let mut at = node;
                        while at != start {
                            path.push(at);
                            at = parent[&at];
                        }
                        path.push(start);
                        path.reverse();
                        return path;
                    }
                    queue.push_back(next);
                }
            }
            unreachable!("a strongly connected component has a cycle through each member")
        }

        /// Every cycle with its files, one example cycle, and every edge inside it with the
        /// lines that make it; empty when there is no cycle.
        pub fn cycle_report(&self) -> String {
            let cycles = self.cycles();
            if cycles.is_empty() {
                return String::new();
            }
            let mut report = format!(
                "{} import cycle(s) between files. Files in a cycle can only be read, tested and \
                 moved together; cut one edge of each cycle (move the shared item down, or \
                 name it from the module that owns it).\n",
                cycles.len()
            );
            for (number, component) in cycles.iter().enumerate() {
                report += &format!(
                    "\ncycle {} of {}: {} files\n",
                    number + 1,
                    cycles.len(),
                    component.len()
                );
                for &member in component {
                    report += &format!("    {}\n", self.files[member].path);
                }
                let example: Vec<&str> = self
                    .example_cycle(component)
                    .into_iter()
                    .map(|member| self.files[member].path.as_str())
                    .collect();
                report += &format!("  for example: {}\n", example.join(" -> "));
                report += "  edges inside it:\n";
                // References are sorted by (from, to, line): each edge's lines are adjacent.
                let inside: Vec<&Reference> = self
                    .references
                    .iter()
                    .filter(|r| component.contains(&r.from) && component.contains(&r.to))
                    .collect();
                for edge in inside.chunk_by(|a, b| (a.from, a.to) == (b.from, b.to)) {
                    let (from, to) = (&self.files[edge[0].from], &self.files[edge[0].to]);
                    report += &format!("    {} -> {}\n", from.path, to.path);
                    for reference in edge.iter().take(LINES_PER_EDGE) {
                        report += &format!(
                            "        {}:{}: {}\n",
                            from.path,
                            reference.line,
                            from.line(reference.line)
                        );
                    }
                    if edge.len() > LINES_PER_EDGE {
                        report += &format!(
                            "        … and {} more line(s)\n",
                            edge.len() - LINES_PER_EDGE
                        );
                    }
                }
            }
            report
        }

        /// The references that break `rules` (layer → module path prefixes it must not name),
        /// with `aliases` (`(today, target)` module names) applied to both ends, and the files
        /// whose top-level module has no rule. One message per reference.
        pub fn layer_violations(
            &self,
            rules: &[(&str, &[&str])],
            aliases: &[(&str, &str)],
        ) -> Vec<String> {
            let layer_path = |module: &[String]| -> Vec<String> {
                let mut path = module.to_vec();
                if let Some(&(_, target)) = aliases
                    .iter()
                    .find(|(today, _)| path.first().is_some_and(|first| first == today))
                {
                    path.splice(0..1, target.split("::").map(str::to_owned));
                }
                path
            };
            let mut violations = Vec::new();
            for (index, file) in self.files.iter().enumerate() {
                let Some(layer) = layer_path(&file.module).first().cloned() else {
                    continue; // The crate root only declares modules.
                };
                let Some((_, forbidden)) = rules.iter().find(|(name, _)| *name == layer) else {
                    violations.push(format!(
                        "{}: the top-level module `{layer}` has no row in the layer rules; add one",
                        file.path
                    ));
                    continue;
                };
                for reference in self.references.iter().filter(|r| r.from == index) {
                    let target = layer_path(&self.files[reference.to].module);
                    for rule in forbidden.iter() {
                        let rule_path: Vec<&str> = rule.split("::").collect();
                        let named = target.len() >= rule_path.len()
                            && target.iter().zip(&rule_path).all(|(a, b)| a == b);
                        if named {
                            violations.push(format!(
                                "{}:{}: {layer} must not name {rule} ({})\n        {}",
                                file.path,
                                reference.line,
                                self.files[reference.to].path,
                                file.line(reference.line)
                            ));
                        }
                    }
                }
            }
            violations
        }
    }

    /// Tarjan's algorithm, iterative (an explicit stack of (node, next successor to visit)
    /// stands in for the recursion). Returns every strongly connected component, members sorted.
    pub fn strongly_connected_components(successors: &[Vec<usize>]) -> Vec<Vec<usize>> {
        const UNVISITED: usize = usize::MAX;
        let count = successors.len();
        let mut index = vec![UNVISITED; count]; // Visit order.
        let mut low = vec![0; count]; // Lowest index reachable through the DFS subtree.
        let mut on_stack = vec![false; count];
        let mut stack = Vec::new();
        let mut next_index = 0;
        let mut components = Vec::new();
        for root in 0..count {
            if index[root] != UNVISITED {
                continue;
            }
            let mut calls = vec![(root, 0)];
            index[root] = next_index;
            low[root] = next_index;
            next_index += 1;
            stack.push(root);
            on_stack[root] = true;
            while let Some(&(node, child)) = calls.last() {
                if let Some(&next) = successors[node].get(child) {
                    calls.last_mut().unwrap().1 += 1;
                    if index[next] == UNVISITED {
                        index[next] = next_index;
                        low[next] = next_index;
                        next_index += 1;
                        stack.push(next);
                        on_stack[next] = true;
                        calls.push((next, 0));
                    } else if on_stack[next] {
                        low[node] = low[node].min(index[next]);
                    }
                    continue;
                }
                // Every successor visited: return from `node`.
                calls.pop();
                if let Some(&(parent, _)) = calls.last() {
                    low[parent] = low[parent].min(low[node]);
                }
                if low[node] == index[node] {
                    let mut component = Vec::new();
                    loop {
                        let member = stack.pop().unwrap();
                        on_stack[member] = false;
                        component.push(member);
                        if member == node {
                            break;
                        }
                    }
                    component.sort();
                    components.push(component);
                }
            }
        }
        components
    }

    fn is_ident_char(c: char) -> bool {
        c.is_alphanumeric() || c == '_'
    }

    fn blank(out: &mut String, c: char) {
        out.push(if c == '\n' { '\n' } else { ' ' });
    }

    /// If a raw string literal (`r"…"`, `r#"…"#`, `br#"…"#`) starts at `i`, the number of `#`.
    fn raw_string_hashes(chars: &[char], i: usize) -> Option<usize> {
        let word_start = |at: usize| at == 0 || !is_ident_char(chars[at - 1]);
        let prefixed = word_start(i) || (i >= 1 && chars[i - 1] == 'b' && word_start(i - 1));
        if chars[i] != 'r' || !prefixed {
            return None;
        }
        let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
        (chars.get(i + 1 + hashes) == Some(&'"')).then_some(hashes)
    }

    /// `text` with comments (line, block, doc) and string and char literals replaced by spaces;
    /// line breaks stay, so line numbers hold. Lifetimes are kept.
    pub fn blank_comments_and_literals(text: &str) -> String {
        let chars: Vec<char> = text.chars().collect();
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let next = chars.get(i + 1).copied();
            if c == '/' && next == Some('/') {
                while i < chars.len() && chars[i] != '\n' {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
            } else if c == '/' && next == Some('*') {
                // Block comments nest.
                let mut depth = 0;
                while i < chars.len() {
                    let pair = (chars[i], chars.get(i + 1).copied());
                    if pair == ('/', Some('*')) || pair == ('*', Some('/')) {
                        depth += if pair.0 == '/' { 1 } else { -1 };
                        out.push_str("  ");
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, chars[i]);
                        i += 1;
                    }
                }
            } else if let Some(hashes) = raw_string_hashes(&chars, i) {
                let closing: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat('#').take(hashes))
                    .collect();
                let open = 2 + hashes;
                out.push_str(&" ".repeat(open));
                i += open;
                while i < chars.len() && !chars[i..].starts_with(&closing) {
                    blank(&mut out, chars[i]);
                    i += 1;
                }
                let end = (i + closing.len()).min(chars.len());
                out.push_str(&" ".repeat(end - i));
                i = end;
            } else if c == '"' {
                out.push(' ');
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    let width = if chars[i] == '\\' { 2 } else { 1 };
                    for &skipped in chars.iter().skip(i).take(width) {
                        blank(&mut out, skipped);
                    }
                    i += width;
                }
                if i < chars.len() {
                    out.push(' ');
                    i += 1;
                }
            } else if c == '\'' && (next == Some('\\') || chars.get(i + 2) == Some(&'\'')) {
                // A char literal (`'x'`, `'\n'`, `'\u{1F600}'`); a lifetime `'a` has no closing quote.
                let mut end = i + 2;
                if next == Some('\\') {
                    end += 1;
                    while end < chars.len() && chars[end] != '\'' {
                        end += 1;
                    }
                }
                let end = (end + 1).min(chars.len());
                for &skipped in &chars[i..end] {
                    blank(&mut out, skipped);
                }
                i = end;
            } else {
                out.push(c);
                i += 1;
            }
        }
        out
    }

    /// A word, `::`, or a single punctuation character, with its line (from 1).
    pub struct Token {
        text: String,
        line: usize,
    }

    /// Splits blanked code into tokens. `$crate` and macro variables (`$x`) are one word.
    pub fn tokenize(code: &str) -> Vec<Token> {
        let chars: Vec<char> = code.chars().collect();
        let mut tokens = Vec::new();
        let mut line = 1;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            let start = i;
            if c == '\n' {
                line += 1;
                i += 1;
                continue;
            } else if c.is_whitespace() {
                i += 1;
                continue;
            } else if is_ident_char(c)
                || (c == '$' && chars.get(i + 1).is_some_and(|&n| is_ident_char(n)))
            {
                i += 1;
                while i < chars.len() && is_ident_char(chars[i]) {
                    i += 1;
                }
            } else if c == ':' && chars.get(i + 1) == Some(&':') {
                i += 2;
            } else {
                i += 1;
            }
            tokens.push(Token {
                text: chars[start..i].iter().collect(),
                line,
            });
        }
        tokens
    }

    /// A path as written, each segment with its line: `super::thread::RunEnd`. A leading `::`
    /// is kept as a segment of its own; a glob is a `*` segment.
    type WrittenPath = Vec<(String, usize)>;

    /// A path named somewhere in a file, and the inline modules (`mod tests { … }`) around it.
    pub struct NamedPath {
        scope: Vec<String>,
        path: WrittenPath,
    }

    fn text(tokens: &[Token], i: usize) -> &str {
        tokens.get(i).map_or("", |token| token.text.as_str())
    }

    /// A word that can start or continue a path: an identifier, a keyword like `crate`, `$crate`.
    fn is_word(text: &str) -> bool {
        text.starts_with(|c: char| c.is_alphabetic() || c == '_' || c == '$')
    }

    /// Every path the tokens name: the leaves of `use` trees, and inline paths of two or more
    /// segments elsewhere. `mod x;` names nothing; `mod x { … }` opens a scope.
    pub fn named_paths(tokens: &[Token]) -> Vec<NamedPath> {
        let mut named = Vec::new();
        let mut depth = 0; // Brace depth.
        let mut inline_modules: Vec<(String, usize)> = Vec::new(); // Name, depth inside it.
        let scope = |inline_modules: &[(String, usize)]| -> Vec<String> {
            inline_modules
                .iter()
                .map(|(name, _)| name.clone())
                .collect()
        };
        let mut i = 0;
        while i < tokens.len() {
            let word = text(tokens, i);
            let previous = if i == 0 { "" } else { text(tokens, i - 1) };
            match word {
                "{" => {
                    depth += 1;
                    i += 1;
                }
                "}" => {
                    if inline_modules
                        .last()
                        .is_some_and(|(_, inside)| *inside == depth)
                    {
                        inline_modules.pop();
                    }
                    depth -= 1;
                    i += 1;
                }
                "mod" if is_word(text(tokens, i + 1)) => {
                    if text(tokens, i + 2) == "{" {
                        inline_modules.push((text(tokens, i + 1).to_owned(), depth + 1));
                    }
                    i += 2;
                }
                // `use<'a>` is precise capturing in `impl Trait + use<'a>`, not an import.
                "use" if text(tokens, i + 1) != "<" => {
                    let mut leaves = Vec::new();
                    i = use_tree(tokens, i + 1, Vec::new(), &mut leaves);
                    for path in leaves {
                        let scope = scope(&inline_modules);
                        named.push(NamedPath { scope, path });
                    }
                }
                // An inline path; not the tail of one (`<T as U>::x`), nor `pub(in crate::x)`.
                _ if is_word(word)
                    && previous != "::"
                    && !(previous == "in" && i >= 2 && text(tokens, i - 2) == "(") =>
                {
                    let mut path = vec![(word.to_owned(), tokens[i].line)];
                    i += 1;
                    while text(tokens, i) == "::" && is_word(text(tokens, i + 1)) {
                        path.push((text(tokens, i + 1).to_owned(), tokens[i + 1].line));
                        i += 2;
                    }
                    if path.len() > 1 {
                        let scope = scope(&inline_modules);
                        named.push(NamedPath { scope, path });
                    }
                }
                _ => i += 1,
            }
        }
        named
    }

    /// Parses the `use` tree starting at token `i` below `prefix`, pushing each leaf's full
    /// path to `leaves`; returns the index after the tree. A group's `self` names the group's
    /// prefix; `as` renames are dropped.
    fn use_tree(
        tokens: &[Token],
        mut i: usize,
        mut path: WrittenPath,
        leaves: &mut Vec<WrittenPath>,
    ) -> usize {
        if text(tokens, i) == "::" {
            if path.is_empty() {
                path.push(("::".to_owned(), tokens[i].line));
            }
            i += 1;
        }
        loop {
            match text(tokens, i) {
                "{" => {
                    i += 1;
                    while !matches!(text(tokens, i), "}" | "") {
                        let before = i;
                        i = use_tree(tokens, i, path.clone(), leaves);
                        if text(tokens, i) == "," {
                            i += 1;
                        }
                        if i == before {
                            i += 1; // Not a use tree after all; never loop forever.
                        }
                    }
                    return i + 1;
                }
                "*" => {
                    path.push(("*".to_owned(), tokens[i].line));
                    leaves.push(path);
                    return i + 1;
                }
                word if is_word(word) => {
                    path.push((word.to_owned(), tokens[i].line));
                    i += 1;
                    if text(tokens, i) == "::" {
                        i += 1;
                        continue;
                    }
                    if text(tokens, i) == "as" {
                        i += 2;
                    }
                    if word == "self" && path.len() > 1 {
                        path.pop();
                    }
                    leaves.push(path);
                    return i;
                }
                _ => return i,
            }
        }
    }

    /// The file a path names, from a file (or inline module) at module path `current`, and the
    /// line of the segment that names it; `None` for another crate or a local item.
    fn resolve(
        modules: &BTreeMap<Vec<String>, usize>,
        current: &[String],
        path: &WrittenPath,
    ) -> Option<(usize, usize)> {
        let (first, first_line) = path.first()?;
        let here = |line: usize| current.iter().map(move |segment| (segment.clone(), line));
        // The absolute module path, each segment with the line that names it, and how short a
        // prefix may match: a bare path must start with a child module of `current`.
        let (absolute, shortest): (WrittenPath, usize) = match first.as_str() {
            "::" => return None,
            "crate" | "$crate" => (path[1..].to_vec(), 0),
            "self" => (here(*first_line).chain(path[1..].to_vec()).collect(), 0),
            "super" => {
                let supers = path.iter().take_while(|(word, _)| word == "super").count();
                let kept = current.len().checked_sub(supers)?;
                let line = path[supers - 1].1;
                let base = current[..kept]
                    .iter()
                    .map(|segment| (segment.clone(), line));
                (base.chain(path[supers..].to_vec()).collect(), 0)
            }
            _ => (
                here(*first_line).chain(path.iter().cloned()).collect(),
                current.len() + 1,
            ),
        };
        (shortest..=absolute.len()).rev().find_map(|length| {
            let key: Vec<String> = absolute[..length].iter().map(|(s, _)| s.clone()).collect();
            let file = *modules.get(&key)?;
            let line = if length == 0 {
                *first_line
            } else {
                absolute[length - 1].1
            };
            Some((file, line))
        })
    }
}

/// The resolver and the cycle finder on small in-memory crates.
mod resolver_tests {
    use super::deps::{module_path, Graph};

    fn graph(files: &[(&str, &str)]) -> Graph {
        let sources: Vec<(String, String)> = files
            .iter()
            .map(|(path, text)| (path.to_string(), text.to_string()))
            .collect();
        Graph::build(&sources)
    }

    /// The edges as `from -> to:line`, sorted.
    fn edges(graph: &Graph) -> Vec<String> {
        graph
            .references
            .iter()
            .map(|r| {
                format!(
                    "{} -> {}:{}",
                    graph.files[r.from].path, graph.files[r.to].path, r.line
                )
            })
            .collect()
    }

    #[test]
    fn files_map_to_module_paths() {
        assert_eq!(module_path("src/lib.rs"), Some(vec![]));
        assert_eq!(module_path("src/main.rs"), None);
        assert_eq!(module_path("src/a/mod.rs"), Some(vec!["a".to_owned()]));
        assert_eq!(
            module_path("src/a/b.rs"),
            Some(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(module_path("tests/tidy.rs"), None);
    }

    #[test]
    fn grouped_nested_and_multi_line_uses_name_each_module() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod a;\npub mod user;\n"),
            ("src/a/mod.rs", "pub mod b;\npub mod c;\npub mod d;\n"),
            ("src/a/b.rs", ""),
            ("src/a/c.rs", ""),
            ("src/a/d.rs", ""),
            (
                "src/user.rs",
                "use crate::a::{b, c::{D, E}};\nuse crate::a::{\n    self,\n    d::F as G,\n};\nuse std::fmt;\n",
            ),
        ]);
        assert_eq!(
            edges(&graph),
            [
                "src/user.rs -> src/a/b.rs:1",
                "src/user.rs -> src/a/c.rs:1",
                "src/user.rs -> src/a/d.rs:4",
                "src/user.rs -> src/a/mod.rs:2",
            ]
        );
        assert!(graph.cycles().is_empty());
    }

    #[test]
    fn super_self_and_inline_modules_resolve_from_where_they_are() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod a;\n"),
            (
                "src/a/mod.rs",
                "pub mod b;\npub mod c;\nuse self::b::Z;\npub struct Y;\n",
            ),
            (
                "src/a/b.rs",
                "use super::c::X;\n\
                 #[cfg(test)]\n\
                 mod tests {\n    use super::*;\n    use super::super::c;\n}\n\
                 pub struct Z;\n",
            ),
            ("src/a/c.rs", "pub fn f() -> super::Y { super::Y }\n"),
        ]);
        assert_eq!(
            edges(&graph),
            [
                "src/a/b.rs -> src/a/c.rs:1",
                "src/a/b.rs -> src/a/c.rs:5",
                "src/a/c.rs -> src/a/mod.rs:1",
                "src/a/mod.rs -> src/a/b.rs:3",
            ]
        );
    }

    #[test]
    fn inline_paths_in_code_are_references_and_other_crates_are_not() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod a;\npub mod x;\n"),
            ("src/a/mod.rs", "pub mod b;\npub mod c;\n"),
            ("src/a/b.rs", "pub fn f() {}\n"),
            ("src/a/c.rs", "pub struct Y;\n"),
            (
                "src/x.rs",
                "fn g() {\n    crate::a::b::f();\n    let y = Vec::<u8>::new();\n    \
                 std::mem::drop(y);\n    let _ = Decision::Run;\n}\n\
                 pub(in crate::a) fn h() -> crate::a::c::Y { todo!() }\n",
            ),
        ]);
        assert_eq!(
            edges(&graph),
            ["src/x.rs -> src/a/b.rs:2", "src/x.rs -> src/a/c.rs:7"]
        );
    }

    #[test]
    fn a_re_exported_item_resolves_to_the_mod_rs_and_can_close_a_cycle() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod domain;\npub mod user;\n"),
            (
                "src/domain/mod.rs",
                "pub mod missing;\npub use missing::{AlreadyExists, NotFound};\npub type JsonMap = ();\n",
            ),
            (
                "src/domain/missing.rs",
                "pub struct NotFound(super::JsonMap);\npub struct AlreadyExists;\n",
            ),
            (
                "src/user.rs",
                "use crate::domain::{JsonMap, NotFound};\n",
            ),
        ]);
        assert_eq!(
            edges(&graph),
            [
                "src/domain/missing.rs -> src/domain/mod.rs:1",
                "src/domain/mod.rs -> src/domain/missing.rs:2",
                "src/user.rs -> src/domain/mod.rs:1",
            ]
        );
        let mod_rs = graph.file("src/domain/mod.rs").unwrap();
        let missing = graph.file("src/domain/missing.rs").unwrap();
        let mut expected = vec![mod_rs, missing];
        expected.sort();
        assert_eq!(graph.cycles(), [expected]);
    }

    #[test]
    fn comments_and_string_literals_name_nothing() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod x;\npub mod y;\n"),
            ("src/x.rs", ""),
            (
                "src/y.rs",
                "//! Unlike crate::x, this module\n\
                 /// calls crate::x::f.\n\
                 // use crate::x;\n\
                 /* crate::x::f() /* nested */ crate::x::g() */\n\
                 const A: &str = \"crate::x::f\";\n\
                 const B: &str = r#\"use crate::x; \"quoted\" \"#;\n\
                 const C: char = '\"'; const D: &str = \"\\\"crate::x\\\"\";\n\
                 fn e<'a>(s: &'a str) -> &'a str { s }\n",
            ),
        ]);
        assert_eq!(edges(&graph), Vec::<String>::new());
    }

    #[test]
    fn mod_declarations_are_structure_not_dependencies() {
        let graph = graph(&[
            ("src/lib.rs", "pub mod a;\nmod b;\n"),
            ("src/a.rs", ""),
            ("src/b.rs", "use crate::a;\n"),
        ]);
        assert_eq!(edges(&graph), ["src/b.rs -> src/a.rs:1"]);
    }

    #[test]
    fn the_scc_check_finds_a_three_file_cycle_and_shows_its_lines() {
        let graph = graph(&[
            (
                "src/lib.rs",
                "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n",
            ),
            ("src/a.rs", "use crate::b::B;\npub struct A;\n"),
            ("src/b.rs", "pub struct B;\nfn f() { crate::c::g() }\n"),
            ("src/c.rs", "pub fn g() {\n    let _ = crate::a::A;\n}\n"),
            ("src/d.rs", "use crate::a::A;\n"),
        ]);
        let (a, b, c) = (
            graph.file("src/a.rs").unwrap(),
            graph.file("src/b.rs").unwrap(),
            graph.file("src/c.rs").unwrap(),
        );
        assert_eq!(graph.cycles(), [vec![a, b, c]]);
        let report = graph.cycle_report();
        for expected in [
            "1 import cycle(s)",
            "for example: src/a.rs -> src/b.rs -> src/c.rs -> src/a.rs",
            "src/a.rs:1: use crate::b::B;",
            "src/b.rs:2: fn f() { crate::c::g() }",
            "src/c.rs:2: let _ = crate::a::A;",
        ] {
            assert!(report.contains(expected), "{expected:?} not in:\n{report}");
        }
        assert!(!report.contains("src/d.rs"), "{report}");
    }

    #[test]
    fn layer_rules_apply_to_resolved_files_with_aliases() {
        let graph = graph(&[
            ("src/lib.rs", ""),
            ("src/domain.rs", ""),
            ("src/storage/mod.rs", "pub mod sqlite;\n"),
            ("src/storage/sqlite.rs", ""),
            ("src/graph/mod.rs", "use crate::storage::Store;\n"),
            (
                "src/actors.rs",
                "use crate::domain::X;\nuse crate::storage::{Store, sqlite::SqliteStore};\nuse crate::graph::G;\n",
            ),
            ("src/extra.rs", ""),
        ]);
        let rules: &[(&str, &[&str])] = &[
            ("domain", &["storage"]),
            ("storage", &["engine"]),
            ("engine", &["storage"]),
            ("actors", &["storage::sqlite", "engine::toml"]),
        ];
        let violations = graph.layer_violations(rules, &[("graph", "engine")]);
        assert_eq!(violations.len(), 3, "{violations:#?}");
        assert!(violations[0].starts_with(
            "src/actors.rs:2: actors must not name storage::sqlite (src/storage/sqlite.rs)"
        ));
        assert!(violations[1].starts_with("src/extra.rs: the top-level module `extra`"));
        assert!(violations[2]
            .starts_with("src/graph/mod.rs:1: engine must not name storage (src/storage/mod.rs)"));
    }
}
