//! Shell pieces every controller's Pods use to get their data: the download function of the
//! fetch init containers and shell quoting (training, online and batch Pods alike).

/// A single-quoted shell word.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The fetch function the init container's script starts with: whatever downloader the image has.
pub const FETCH_FN: &str = r#"fetch() { mkdir -p "$(dirname "$2")"; if command -v curl >/dev/null 2>&1; then curl -fsSL --retry 3 -o "$2" "$1"; elif command -v wget >/dev/null 2>&1; then wget -q -O "$2" "$1"; elif command -v python3 >/dev/null 2>&1; then python3 -c 'import sys,urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' "$1" "$2"; else echo "no curl, wget or python3 in the image to download $1" >&2; return 1; fi; }"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_survive_the_shell() {
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
        assert!(FETCH_FN.starts_with("fetch() {"));
    }
}
