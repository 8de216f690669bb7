//! What `vxmesh --version` prints: the version, the git revision the binary was built from
//! (build.rs) and the parts compiled in. Not on any packet path.

/// The git revision (`git rev-parse --short=12 HEAD` at build time; "unknown" outside git).
pub const GIT_REV: &str = env!("VXMESH_GIT_REV");

/// Whether the encrypted underlay's ESP (issue 18, the `esp` crate) is in this build: it is
/// always linked into the node.
pub const ESP: bool = true;

/// The parts of the dataplane compiled in, as (name, enabled): the port drivers (`vswitch`'s
/// cargo features), the cluster store client, ESP.
pub fn features() -> Vec<(&'static str, bool)> {
    let mut f: Vec<(&'static str, bool)> = vswitch::FEATURES.to_vec();
    f.push(("store", true));
    f.push(("esp", ESP));
    f
}

/// The text after `vxmesh ` in `vxmesh --version`: `0.1.0 (git abc123def456)` and a line of
/// features, `+afxdp +tap +udp +store +esp`.
pub fn long() -> String {
    let feats: Vec<String> = features()
        .iter()
        .map(|(n, on)| format!("{}{n}", if *on { '+' } else { '-' }))
        .collect();
    format!(
        "{} (git {GIT_REV})\nfeatures: {}",
        env!("CARGO_PKG_VERSION"),
        feats.join(" ")
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_revision_and_features() {
        let v = super::long();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(v.contains("(git "), "{v}");
        for f in ["afxdp", "tap", "udp", "store", "esp"] {
            assert!(
                v.contains(&format!("+{f}")) || v.contains(&format!("-{f}")),
                "{v}"
            );
        }
        // The node is built with every port driver (Cargo.toml).
        assert!(v.contains("+afxdp +tap +udp +store"), "{v}");
    }
}
