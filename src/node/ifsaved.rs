//! What the node's AF_XDP ports changed on their interfaces, kept in a file while they are
//! open (`/run/vxmesh/NODE.ifsaved`, beside the connection table), so that a node that died
//! with them open puts it back when it starts again.
//!
//! Where it sits: outside the packet path. A port opened with `--afxdp-offloads` turns IPv4
//! forwarding and IPv6 off and sets receive packet steering on its veth; one opened with
//! `--afxdp-napi-defer-us` defers the veth's receive. A port puts those back when it closes
//! (`vswitch::port::afxdp`), but a node killed or crashed cannot: the veth kept the steering's
//! inter-processor interrupts or the deferral's timer, and a port opened there later took that
//! state as the one to put back, for good. So:
//!
//! - [`recover`], when a node starts and before it opens a port: each record of the file whose
//!   interface is still there (same name and index, in the node's namespace) is written back,
//!   then the file is removed. A record that does not pass `IfSettings::checked` (a corrupt or
//!   foreign file) is skipped with a note, never written.
//! - [`record`], after a port that changed something opens: its record joins the file
//!   (written whole to a temporary file, then renamed over it).
//! - [`clear`], when the node stops after its ports closed (and put everything back): the
//!   file goes.
//!
//! A port removed by a live change has put its settings back; its record stays in the file
//! until the node stops, and a crash before then writes the same values again at the next
//! start (the interface's index tells a veth made again apart).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};
use vswitch::port::afxdp::IfSettings;

/// The records of this process's ports, and the file they are kept in (none: not kept, as in
/// tests and benches, which never call [`recover`]).
static KEPT: Mutex<Option<(PathBuf, Vec<IfSettings>)>> = Mutex::new(None);

/// The file of the node whose control socket is `control` (`/run/vxmesh/NODE.ifsaved`).
pub fn file_of(control: &Path) -> PathBuf {
    control.with_extension("ifsaved")
}

/// Put back what a previous process of this node left changed (the file at `path`), remove the
/// file, and keep this process's records there from now on. Notes on what was put back or
/// skipped, for the log.
pub fn recover(path: &Path) -> Vec<String> {
    let mut notes = Vec::new();
    match std::fs::read_to_string(path) {
        Ok(text) => {
            for r in parse(&text, &mut notes) {
                match r.put_back() {
                    Ok(true) => notes.push(format!(
                        "{}: put back what a previous process changed ({})",
                        r.ifname,
                        describe(&r)
                    )),
                    Ok(false) => {}
                    Err(e) => notes.push(format!("{}: putting back failed: {e}", r.ifname)),
                }
            }
            if let Err(e) = std::fs::remove_file(path) {
                notes.push(format!("{}: {e}", path.display()));
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => notes.push(format!("{}: {e}", path.display())),
    }
    *KEPT.lock().unwrap_or_else(|e| e.into_inner()) = Some((path.to_path_buf(), Vec::new()));
    notes
}

/// Keep `settings` (what a port just changed) in the file, replacing an earlier record of the
/// same interface index. Nothing when the node keeps no file.
pub fn record(settings: Vec<IfSettings>) -> std::io::Result<()> {
    if settings.is_empty() {
        return Ok(());
    }
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let Some((path, list)) = kept.as_mut() else {
        return Ok(());
    };
    for s in settings {
        list.retain(|r| r.ifindex != s.ifindex);
        list.push(s);
    }
    let tmp = path.with_extension("ifsaved.tmp");
    std::fs::write(&tmp, to_json(list).to_string())?;
    std::fs::rename(&tmp, path)
}

/// The node stopped and its ports put everything back: remove the file.
pub fn clear() {
    if let Some((path, _)) = KEPT.lock().unwrap_or_else(|e| e.into_inner()).take() {
        let _ = std::fs::remove_file(path);
    }
}

fn describe(r: &IfSettings) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(v) = &r.forwarding {
        parts.push(format!("forwarding {v}"));
    }
    if let Some(v) = &r.disable_ipv6 {
        parts.push(format!("disable_ipv6 {v}"));
    }
    parts.extend(r.sysfs.iter().map(|(f, v)| format!("{f} {v}")));
    parts.join(", ")
}

fn to_json(list: &[IfSettings]) -> Value {
    Value::Array(
        list.iter()
            .map(|r| {
                json!({
                    "ifname": r.ifname,
                    "ifindex": r.ifindex,
                    "forwarding": r.forwarding,
                    "disable_ipv6": r.disable_ipv6,
                    "sysfs": r.sysfs,
                })
            })
            .collect(),
    )
}

/// The records of a file's text that pass `IfSettings::checked`; the rest are noted.
fn parse(text: &str, notes: &mut Vec<String>) -> Vec<IfSettings> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(text) else {
        notes.push("the interface settings file is not a JSON list: ignored".into());
        return Vec::new();
    };
    let opt = |v: &Value| v.as_str().map(str::to_string);
    items
        .iter()
        .filter_map(|it| {
            let sysfs = it["sysfs"].as_array().map(|a| {
                a.iter()
                    .filter_map(|p| Some((opt(&p[0])?, opt(&p[1])?)))
                    .collect::<Vec<_>>()
            });
            let r = IfSettings {
                ifname: opt(&it["ifname"]).unwrap_or_default(),
                ifindex: it["ifindex"]
                    .as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .unwrap_or(0),
                forwarding: opt(&it["forwarding"]),
                disable_ipv6: opt(&it["disable_ipv6"]),
                sysfs: sysfs.unwrap_or_default(),
            };
            r.checked()
                .map_err(|e| {
                    notes.push(format!(
                        "a record of the interface settings file skipped: {e}"
                    ))
                })
                .ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ifindex: u32) -> IfSettings {
        IfSettings {
            ifname: "vc11".into(),
            ifindex,
            forwarding: Some("1".into()),
            disable_ipv6: None,
            sysfs: vec![("gro_flush_timeout".into(), "0".into())],
        }
    }

    #[test]
    fn records_read_back_as_written_and_bad_ones_are_skipped() {
        let mut notes = Vec::new();
        let text = to_json(&[rec(7), rec(8)]).to_string();
        assert_eq!(parse(&text, &mut notes), vec![rec(7), rec(8)]);
        assert!(notes.is_empty(), "{notes:?}");
        let hostile = r#"[{"ifname":"vc11","ifindex":7,"sysfs":[["../../../proc/sysrq-trigger","c"]]},
                          {"ifname":"vc11","ifindex":9,"sysfs":[["gro_flush_timeout","0"]]}, 5]"#;
        let got = parse(hostile, &mut notes);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ifindex, 9);
        assert_eq!(notes.len(), 2, "{notes:?}");
        notes.clear();
        assert!(parse("{not json", &mut notes).is_empty());
        assert_eq!(notes.len(), 1);
    }
}
