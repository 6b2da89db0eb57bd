//! The import rules of the layout (README, "Layout"), checked on the source files under `src/`:
//!
//! - the data plane (`dataplane/`) never imports a controller;
//! - a controller (`controllers/<name>/`) never imports another controller or the data plane
//!   (`controllers/mod.rs`, which starts them all, is the one exception);
//! - the runtime (`runtime/`) imports nothing of the crate but `api` and `contract`: no feature
//!   (controllers, dataplane, operator, cli);
//! - the contract (`contract/`) imports nothing of the crate but `api`, and `api` nothing at all.
//!
//! Every spelling of a path counts: `crate::x::…` anywhere (a `use`, an expression, a type),
//! `use crate::{x::…}` groups over any number of lines, `super::super::…` that climbs out of a
//! folder (inline `mod` blocks included), `self::…`, and `mlcompute::…` in binaries (whose place
//! in the layout [`BINARIES`] declares). Comments and string literals are not code and are skipped.
//! [`the_checker_catches_every_form`] runs the checker on small sources, so it is known to catch
//! each form.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

/// Binaries under `src/` and the module they belong with (their `mlcompute::` paths are checked
/// as that module's). A binary not listed fails the test: say where it belongs.
const BINARIES: &[(&str, &str)] = &[("src/main.rs", "cli")];

/// Where a module sits in the layout.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Layer {
    /// `lib.rs` and items at the crate root (`crate::VERSION`).
    Root,
    Api,
    Contract,
    Runtime,
    /// `controllers/<name>`; the empty name is `controllers/mod.rs` itself.
    Controller(String),
    Dataplane,
    Operator,
    Cli,
    /// Any other top-level module (`telemetry`, this test).
    Other(String),
}

fn layer_of(path: &[String], modules: &BTreeSet<String>) -> Layer {
    let Some(first) = path.first() else {
        return Layer::Root;
    };
    match first.as_str() {
        "api" => Layer::Api,
        "contract" => Layer::Contract,
        "runtime" => Layer::Runtime,
        "controllers" => Layer::Controller(path.get(1).cloned().unwrap_or_default()),
        "dataplane" => Layer::Dataplane,
        "operator" => Layer::Operator,
        "cli" => Layer::Cli,
        other if modules.contains(other) => Layer::Other(other.to_string()),
        _ => Layer::Root,
    }
}

/// Why a module in `from` may not use a path into `to`, if it may not.
fn broken(from: &Layer, to: &Layer) -> Option<&'static str> {
    use Layer::*;
    match (from, to) {
        (Api, Root | Api) => None,
        (Api, _) => Some("the api imports something of the crate"),
        (Dataplane, Controller(_)) => Some("the data plane imports a controller"),
        (Runtime, Root | Api | Contract | Runtime) => None,
        (Runtime, _) => Some("the runtime imports a feature (only api and contract)"),
        (Contract, Root | Api | Contract) => None,
        (Contract, _) => Some("the contract imports something of the crate but api"),
        (Controller(a), Controller(b)) if !a.is_empty() && a != b => {
            Some("a controller imports another controller")
        }
        (Controller(a), Dataplane) if !a.is_empty() => Some("a controller imports the data plane"),
        _ => None,
    }
}

/// One broken rule.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    file: String,
    line: usize,
    path: String,
    rule: &'static str,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}",
            self.file, self.line, self.rule, self.path
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Tok {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Semi,
    Star,
    Other(char),
}

/// The tokens of `text` with their lines; comments, strings and character literals dropped.
fn tokens(text: &str) -> Vec<(Tok, usize)> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    line += usize::from(c[i] == '\n');
                    i += 1;
                }
            }
        } else if ch == '"' {
            i = skip_string(&c, i + 1, &mut line);
        } else if ch == '\'' {
            // A character literal ('x', '\n', '\u{1F600}'), else a lifetime or label.
            if at(i + 1) == '\\' {
                i += 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if ch.is_alphabetic() || ch == '_' || ch == '$' {
            let start = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            let raw_string = at(i) == '"' || (at(i) == '#' && matches!(at(i + 1), '"' | '#'));
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", _) if raw_string => i = skip_raw_string(&c, i, &mut line),
                ("b" | "c", '"') => i = skip_string(&c, i + 1, &mut line),
                ("b", '\'') => {
                    i += 1;
                    while i < c.len() && c[i] != '\'' {
                        i += if c[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                ("r", '#') => {
                    // A raw identifier: r#type.
                    let s = i + 1;
                    i = s;
                    while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                        i += 1;
                    }
                    out.push((Tok::Ident(c[s..i].iter().collect()), line));
                }
                _ => out.push((Tok::Ident(word.trim_start_matches('$').to_string()), line)),
            }
        } else if ch == ':' && at(i + 1) == ':' {
            out.push((Tok::PathSep, line));
            i += 2;
        } else {
            out.push((
                match ch {
                    '{' => Tok::Open,
                    '}' => Tok::Close,
                    ',' => Tok::Comma,
                    ';' => Tok::Semi,
                    '*' => Tok::Star,
                    other => Tok::Other(other),
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// Past the end of a string whose opening quote is just before `i`.
fn skip_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    while i < c.len() && c[i] != '"' {
        if c[i] == '\\' {
            i += 1;
        }
        if c.get(i) == Some(&'\n') {
            *line += 1;
        }
        i += 1;
    }
    i + 1
}

/// Past the end of a raw string whose hashes (or quote) start at `i`.
fn skip_raw_string(c: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    i += 1; // the opening quote
    while i < c.len() {
        if c[i] == '"' && (1..=hashes).all(|k| c.get(i + k) == Some(&'#')) {
            return i + 1 + hashes;
        }
        *line += usize::from(c[i] == '\n');
        i += 1;
    }
    i
}

/// A path as written, with the line of its last segment.
type Written = (Vec<String>, usize);

/// The paths of the use tree starting at `toks[*i]`, each with `prefix` before it.
fn use_tree(toks: &[(Tok, usize)], i: &mut usize, prefix: &[String], out: &mut Vec<Written>) {
    let mut path = prefix.to_vec();
    let mut line = toks.get(*i).map_or(0, |t| t.1);
    if matches!(toks.get(*i), Some((Tok::PathSep, _))) {
        *i += 1;
    }
    while let Some((tok, l)) = toks.get(*i) {
        match tok {
            Tok::Ident(word) if word == "as" => {
                *i += 2;
                break;
            }
            Tok::Ident(word) => {
                path.push(word.clone());
                line = *l;
                *i += 1;
                if matches!(toks.get(*i), Some((Tok::PathSep, _))) {
                    *i += 1;
                } else {
                    break;
                }
            }
            Tok::Star => {
                *i += 1;
                break;
            }
            Tok::Open => {
                *i += 1;
                while !matches!(toks.get(*i), None | Some((Tok::Close, _))) {
                    use_tree(toks, i, &path, out);
                    if matches!(toks.get(*i), Some((Tok::Comma, _))) {
                        *i += 1;
                    }
                }
                *i += 1;
                return;
            }
            _ => break,
        }
    }
    if path.last().is_some_and(|s| s == "self") {
        path.pop();
    }
    out.push((path, line));
}

/// Every path `toks` spells that starts at `crate`, `super`, `self` or `mlcompute`, with the
/// module (inside the file) it is written in.
fn paths(toks: &[(Tok, usize)]) -> Vec<(Vec<String>, Written)> {
    let mut out = Vec::new();
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < toks.len() {
        let here: Vec<String> = inline.iter().map(|(m, _)| m.clone()).collect();
        match &toks[i].0 {
            Tok::Ident(word) if word == "use" => {
                i += 1;
                let mut found = Vec::new();
                use_tree(toks, &mut i, &[], &mut found);
                out.extend(found.into_iter().map(|p| (here.clone(), p)));
                continue;
            }
            Tok::Ident(word)
                if word == "mod"
                    && matches!(toks.get(i + 2), Some((Tok::Open, _)))
                    && matches!(toks.get(i + 1), Some((Tok::Ident(_), _))) =>
            {
                if let Some((Tok::Ident(name), _)) = toks.get(i + 1) {
                    inline.push((name.clone(), depth));
                }
                i += 2;
                continue;
            }
            Tok::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self" | "mlcompute")
                    && matches!(toks.get(i + 1), Some((Tok::PathSep, _)))
                    && !matches!(i.checked_sub(1).map(|p| &toks[p].0), Some(Tok::PathSep)) =>
            {
                let mut path = Vec::new();
                let mut line = toks[i].1;
                while let Some((Tok::Ident(segment), l)) = toks.get(i) {
                    path.push(segment.clone());
                    line = *l;
                    i += 1;
                    if matches!(toks.get(i), Some((Tok::PathSep, _))) {
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((here, (path, line)));
                continue;
            }
            Tok::Open => depth += 1,
            Tok::Close => {
                depth -= 1;
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// The module path of the source file `file` (`src/a/b.rs` → `a::b`), or, for a binary, of the
/// module it belongs with. `None` for a binary [`BINARIES`] does not list.
fn module_of(file: &str, binaries: &[(&str, &str)]) -> Option<(Vec<String>, bool)> {
    if let Some((_, module)) = binaries.iter().find(|(b, _)| *b == file) {
        let path = module.split("::").map(str::to_string).collect();
        return Some((path, true));
    }
    let rel = file.strip_prefix("src/")?.strip_suffix(".rs")?;
    if rel == "main" || rel.starts_with("bin/") {
        return None;
    }
    let mut path: Vec<String> = rel.split('/').map(str::to_string).collect();
    if matches!(path.last().map(String::as_str), Some("mod" | "lib")) {
        path.pop();
    }
    Some((path, false))
}

/// The rules `text`, the source of `file`, breaks. `modules`: the crate's top-level modules.
fn check_source(
    file: &str,
    text: &str,
    modules: &BTreeSet<String>,
    binaries: &[(&str, &str)],
) -> Vec<Violation> {
    let Some((module, binary)) = module_of(file, binaries) else {
        return vec![Violation {
            file: file.into(),
            line: 1,
            path: String::new(),
            rule: "a binary the import-rule test does not know: add it to BINARIES",
        }];
    };
    let from = layer_of(&module, modules);
    let mut found = Vec::new();
    for (inline, (written, line)) in paths(&tokens(text)) {
        let here: Vec<String> = module.iter().cloned().chain(inline).collect();
        let Some(first) = written.first() else {
            continue;
        };
        let absolute: Vec<String> = match first.as_str() {
            "mlcompute" => written[1..].to_vec(),
            // In a binary, `crate` is the binary itself.
            "crate" if !binary => written[1..].to_vec(),
            "self" if !binary => here.iter().chain(&written[1..]).cloned().collect(),
            "super" if !binary => {
                let up = written.iter().take_while(|s| *s == "super").count();
                let Some(base) = here.len().checked_sub(up) else {
                    continue;
                };
                here[..base].iter().chain(&written[up..]).cloned().collect()
            }
            _ => continue,
        };
        if let Some(rule) = broken(&from, &layer_of(&absolute, modules)) {
            found.push(Violation {
                file: file.into(),
                line,
                path: match first.as_str() {
                    "crate" => written.join("::"),
                    _ => format!("{} (= crate::{})", written.join("::"), absolute.join("::")),
                },
                rule,
            });
        }
    }
    found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn imports_follow_the_layout() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src"), &mut files);
    files.sort();
    assert!(files.len() > 50, "the source files are not where expected");
    let modules: BTreeSet<String> = std::fs::read_dir(root.join("src"))
        .unwrap()
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_suffix(".rs").unwrap_or(&name).to_string()
        })
        .collect();
    let mut violations = Vec::new();
    for path in &files {
        let file = path
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let text = std::fs::read_to_string(path).unwrap();
        violations.extend(check_source(&file, &text, &modules, BINARIES));
    }
    let listed: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        listed.is_empty(),
        "imports that break the layout's rules:\n{}",
        listed.join("\n")
    );
}

#[test]
fn the_checker_catches_every_form() {
    let modules: BTreeSet<String> = [
        "api",
        "cli",
        "contract",
        "controllers",
        "dataplane",
        "operator",
        "runtime",
        "telemetry",
    ]
    .map(String::from)
    .into();
    let binaries = [("src/main.rs", "cli"), ("src/bin/router.rs", "dataplane")];
    let check = |file: &str, text: &str| -> Vec<(usize, &'static str)> {
        check_source(file, text, &modules, &binaries)
            .into_iter()
            .map(|v| (v.line, v.rule))
            .collect()
    };
    let lines = |file: &str, text: &str| -> Vec<usize> {
        check(file, text).into_iter().map(|(l, _)| l).collect()
    };
    const NONE: [usize; 0] = [];
    const DP: &str = "src/dataplane/router/x.rs";
    const CTRL: &str = "src/controllers/online/endpoint/status.rs";

    // The data plane: a plain use, a glob, an expression path, a multi-line group.
    assert_eq!(
        check(DP, "use crate::controllers::batch::job::submit;"),
        [(1, "the data plane imports a controller")]
    );
    assert_eq!(lines(DP, "use crate::controllers::*;"), [1]);
    assert_eq!(
        lines(DP, "fn f() {\n    crate::controllers::batch::run();\n}"),
        [2]
    );
    let group = "use crate::{\n    api::BatchJob,\n    controllers::{\n        batch::job::invoke,\n        online,\n    },\n    runtime::names,\n};";
    assert_eq!(lines(DP, group), [4, 5]);
    assert_eq!(
        lines(
            DP,
            "use crate::{api::X, contract::routing, runtime::names};"
        ),
        NONE
    );
    // Climbing out with super (src/dataplane/router/x.rs is dataplane::router::x).
    assert_eq!(
        lines(DP, "use super::super::super::controllers::online;"),
        [1]
    );
    assert_eq!(lines(DP, "use super::super::router::table;"), NONE);
    // mod.rs is its folder's module: from controllers::online::endpoint, two supers reach controllers.
    let endpoint_mod = "src/controllers/online/endpoint/mod.rs";
    assert_eq!(lines(endpoint_mod, "use super::super::batch::job;"), [1]);
    assert_eq!(
        lines(endpoint_mod, "use super::{deployment::build, resolve};"),
        NONE
    );
    // An inline module is one more level: `tests` in status.rs needs four supers to leave online.
    let inline = "mod tests {\n    use super::super::super::deployment;\n    use super::super::super::super::batch::job;\n}\nuse super::super::batch;";
    assert_eq!(lines(CTRL, inline), [3]);
    assert_eq!(lines(CTRL, "use super::super::super::batch::job;"), [1]);
    // Controllers: another controller, the data plane (also in expressions), not their own folder.
    assert_eq!(
        check(CTRL, "use crate::controllers::training::data::FETCH_FN;"),
        [(1, "a controller imports another controller")]
    );
    assert_eq!(
        check(CTRL, "let s = crate::dataplane::router::SCORING_SERVER_PY;"),
        [(1, "a controller imports the data plane")]
    );
    assert_eq!(
        lines(CTRL, "use crate::controllers::online::resolve;"),
        NONE
    );
    assert_eq!(
        lines("src/controllers/mod.rs", "use self::online::endpoint;"),
        NONE
    );
    // The runtime: features are out, api and contract in.
    assert_eq!(
        check(
            "src/runtime/x.rs",
            "use crate::operator::settings::Settings;"
        ),
        [(1, "the runtime imports a feature (only api and contract)")]
    );
    assert_eq!(
        lines("src/runtime/x.rs", "use crate::{cli, dataplane::router};"),
        [1, 1]
    );
    assert_eq!(lines("src/runtime/x.rs", "use crate::telemetry;"), [1]);
    assert_eq!(
        lines(
            "src/runtime/x.rs",
            "use crate::{api::X, contract::labels, VERSION};"
        ),
        NONE
    );
    // The contract: api only.
    assert_eq!(
        check(
            "src/contract/x.rs",
            "use crate::runtime::children::MANAGER;"
        ),
        [(1, "the contract imports something of the crate but api")]
    );
    assert_eq!(
        lines("src/contract/x.rs", "mod tests {\n use crate::cli::Cli;\n}"),
        [2]
    );
    assert_eq!(
        lines(
            "src/contract/x.rs",
            "use super::labels;\nuse crate::api::OnlineEndpoint;"
        ),
        NONE
    );
    assert_eq!(
        lines(
            "src/api/x.rs",
            "use crate::contract::labels;\nuse super::common;"
        ),
        [1]
    );
    // Binaries: mlcompute:: is the crate, checked as the module the binary belongs with.
    const BIN: &str = "src/bin/router.rs";
    assert_eq!(lines(BIN, "use mlcompute::controllers::online;"), [1]);
    assert_eq!(
        lines(
            BIN,
            "use ::mlcompute::{\n    dataplane::router,\n    controllers::batch,\n};"
        ),
        [3]
    );
    assert_eq!(
        lines(BIN, "fn main() { mlcompute::controllers::start(); }"),
        [1]
    );
    assert_eq!(lines(BIN, "use mlcompute::dataplane::router;"), NONE);
    assert_eq!(
        lines("src/main.rs", "use mlcompute::{controllers, dataplane};"),
        NONE
    );
    assert_eq!(
        check("src/bin/other.rs", "fn main() {}"),
        [(
            1,
            "a binary the import-rule test does not know: add it to BINARIES"
        )]
    );
    // Comments, strings, raw strings and characters are not code.
    let not_code = "// use crate::controllers::x;\n/* crate::controllers::y /* nested */ */\nconst A: &str = \"use crate::controllers::z;\";\nconst B: &str = r#\"crate::controllers::w \"quoted\"\"#;\nconst C: char = '\"';\nfn f<'a>(x: &'a str) {}\n/// [`crate::controllers::online`]\nuse crate::controllers::online;";
    assert_eq!(lines(DP, not_code), [8]);
}
