//! What every controller's Pods use to get their data (training, online and batch alike):
//! volumes, mounts, the download function of the fetch init containers and shell quoting.

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, PersistentVolumeClaimVolumeSource, Volume, VolumeMount,
};

/// A mount of volume `name` at `path` (a `sub_path` of it when not empty).
pub fn mount(name: &str, path: &str, sub_path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_string(),
        mount_path: path.to_string(),
        sub_path: (!sub_path.is_empty()).then(|| sub_path.to_string()),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// A scratch volume.
pub fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// A volume of PersistentVolumeClaim `claim`.
pub fn claim(name: &str, claim: &str, read_only: bool) -> Volume {
    Volume {
        name: name.to_string(),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: claim.to_string(),
            read_only: read_only.then_some(true),
        }),
        ..Volume::default()
    }
}

/// The volume of claim `claim` in `volumes`, added once as `claim-<n>`: its name. Many inputs
/// and outputs on one claim share one volume (a Pod may not mount a claim twice under two names).
pub fn claim_volume(volumes: &mut Vec<Volume>, claim_name: &str) -> String {
    let existing = volumes.iter().find(|v| {
        v.persistent_volume_claim
            .as_ref()
            .is_some_and(|p| p.claim_name == claim_name)
    });
    if let Some(v) = existing {
        return v.name.clone();
    }
    let n = volumes
        .iter()
        .filter(|v| v.persistent_volume_claim.is_some())
        .count();
    let name = format!("claim-{n}");
    volumes.push(claim(&name, claim_name, false));
    name
}

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

    #[test]
    fn one_volume_per_claim() {
        let mut volumes = vec![empty_dir("scratch")];
        assert_eq!(claim_volume(&mut volumes, "data"), "claim-0");
        assert_eq!(claim_volume(&mut volumes, "models"), "claim-1");
        assert_eq!(claim_volume(&mut volumes, "data"), "claim-0");
        assert_eq!(volumes.len(), 3);
        assert_eq!(mount("claim-0", "/in", "", true).read_only, Some(true));
        assert_eq!(
            mount("claim-0", "/in", "a/b", false).sub_path.as_deref(),
            Some("a/b")
        );
    }
}
