//! `vxmesh-cni`: the CNI plugin binary (SPEC.md, "Attaching containers: the CNI plugin"), a
//! thin shim as OVN-Kubernetes's is. Off the packet path: a container runtime runs it once per
//! attachment.
//!
//! It reads the CNI environment (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_ARGS`, `CNI_PATH`) and the network config on standard input, answers VERSION itself,
//! and forwards ADD, DEL, CHECK, STATUS and GC to the node named by the config's `"control"`
//! socket (default `/run/vxmesh/vxmesh.sock`), one JSON request line as `vxmesh` sends. It
//! prints the node's answer (the ADD result, or a CNI error object with `code`, `msg` and
//! `details`) and exits with 0 or 1. STATUS fails with code 50 when the node does not answer.
//!
//! A config with an `ipam` section delegates the address to that IPAM plugin, as the reference
//! plugins do: the plugin named by `ipam.type` is found in `CNI_PATH` and run with the same
//! environment and the config on its standard input; ADD passes its address to the node (and runs
//! the IPAM plugin's DEL if the node refuses it), DEL runs it after the node's DEL, CHECK before
//! the node's CHECK.

use std::io::{BufRead, Read, Write};
use std::path::PathBuf;

use serde_json::{Value, json};
use vxmesh::cni::{CniCall, CniError, SUPPORTED_VERSIONS, code};
use vxmesh::daemon::{Reply, Request};

/// The control socket when the config names none.
const DEFAULT_CONTROL: &str = "/run/vxmesh/vxmesh.sock";

fn main() {
    std::process::exit(match run() {
        Ok(out) => {
            print!("{out}");
            let _ = std::io::stdout().flush();
            0
        }
        Err(e) => {
            println!("{}", e.to_json());
            1
        }
    });
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_default()
}

fn run() -> Result<String, CniError> {
    let command = env("CNI_COMMAND");
    if command == "VERSION" {
        return Ok(
            json!({ "cniVersion": "1.1.0", "supportedVersions": SUPPORTED_VERSIONS }).to_string(),
        );
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|e| CniError::new(code::IO, format!("reading the config: {e}")))?;
    let config: Value = serde_json::from_str(&input)
        .map_err(|e| CniError::new(code::DECODE, format!("the config is not JSON: {e}")))?;
    let version = config
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let with = |code: u32, msg: String| CniError {
        cni_version: if version.is_empty() {
            "1.0.0".into()
        } else {
            version.clone()
        },
        ..CniError::new(code, msg)
    };
    if !SUPPORTED_VERSIONS.contains(&version.as_str()) {
        return Err(with(
            code::INCOMPATIBLE_VERSION,
            format!(
                "cniVersion {version:?} is not supported: vxmesh-cni speaks {}",
                SUPPORTED_VERSIONS.join(", ")
            ),
        ));
    }
    let mut call = CniCall {
        container_id: env("CNI_CONTAINERID"),
        netns: env("CNI_NETNS"),
        ifname: env("CNI_IFNAME"),
        args: env("CNI_ARGS"),
        config: config.clone(),
        ipam_ip: None,
    };
    let ipam = config
        .get("ipam")
        .filter(|i| !i.is_null())
        .map(|i| ipam_plugin(i).map_err(|m| with(code::INVALID_CONFIG, m)))
        .transpose()?;
    if let Some(ipam) = &ipam {
        match command.as_str() {
            "ADD" => call.ipam_ip = Some(ipam_add(ipam, &input)?),
            "CHECK" => {
                delegate(ipam, "CHECK", &input)?;
            }
            _ => {}
        }
    }
    let req = match command.as_str() {
        "ADD" => Request::CniAdd(call),
        "DEL" => Request::CniDel(call),
        "CHECK" => Request::CniCheck(call),
        "STATUS" => Request::CniStatus(call),
        "GC" => Request::CniGc(call),
        "" => return Err(with(code::INVALID_ENV, "CNI_COMMAND is not set".into())),
        c => {
            return Err(with(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {c:?}"),
            ));
        }
    };
    let control = PathBuf::from(
        config
            .get("control")
            .and_then(Value::as_str)
            .unwrap_or(DEFAULT_CONTROL),
    );
    let unreachable = |e: String| {
        let code = if command == "STATUS" {
            code::NOT_AVAILABLE
        } else {
            code::TRY_AGAIN
        };
        with(
            code,
            format!("no vxmesh node answers at {}", control.display()),
        )
        .details(format!(
            "{e} (is `vxmesh run` running with this control socket? set \"control\" in the config)"
        ))
    };
    let answer = ask(&control, &req)
        .map_err(unreachable)
        .and_then(|(out, exit)| {
            if exit == 0 {
                return Ok(out);
            }
            // The node sends a CNI error object; anything else is wrapped in one.
            match serde_json::from_str::<CniError>(out.trim()) {
                Ok(e) => Err(e),
                Err(_) => Err(with(
                    code::FAILED,
                    format!("the node failed the call (exit {exit})"),
                )
                .details(out.trim().to_string())),
            }
        });
    if let Some(ipam) = &ipam {
        match command.as_str() {
            // The address goes back to the IPAM plugin: nothing left behind.
            "ADD" if answer.is_err() => {
                let _ = delegate(ipam, "DEL", &input);
            }
            "DEL" => {
                answer.as_ref().map_err(Clone::clone)?;
                delegate(ipam, "DEL", &input)?;
            }
            _ => {}
        }
    }
    answer
}

/// The IPAM plugin of the config's `ipam` section: its `type` found in `CNI_PATH`.
fn ipam_plugin(ipam: &Value) -> Result<PathBuf, String> {
    let ty = ipam
        .get("type")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or("\"ipam\" needs a \"type\": the IPAM plugin's name (e.g. host-local)")?;
    let path = env("CNI_PATH");
    std::env::split_paths(&path)
        .map(|d| d.join(ty))
        .find(|p| p.is_file())
        .ok_or_else(|| format!("IPAM plugin {ty:?} is not in CNI_PATH ({path})"))
}

/// Run the IPAM plugin with `CNI_COMMAND=command`, the caller's environment otherwise, and the
/// config on its standard input; its output, or its error object.
fn delegate(plugin: &std::path::Path, command: &str, config: &str) -> Result<String, CniError> {
    let mut child = std::process::Command::new(plugin)
        .env("CNI_COMMAND", command)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| CniError::new(code::FAILED, format!("running {}: {e}", plugin.display())))?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(config.as_bytes());
    }
    let o = child
        .wait_with_output()
        .map_err(|e| CniError::new(code::FAILED, format!("running {}: {e}", plugin.display())))?;
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() {
        return Ok(out);
    }
    Err(
        serde_json::from_str::<CniError>(out.trim()).unwrap_or_else(|_| {
            CniError::new(
                code::FAILED,
                format!("IPAM plugin {} failed {command}", plugin.display()),
            )
            .details(out.trim().to_string())
        }),
    )
}

/// ADD through the IPAM plugin: the IPv4 address of its result.
fn ipam_add(plugin: &std::path::Path, config: &str) -> Result<std::net::Ipv4Addr, CniError> {
    let out = delegate(plugin, "ADD", config)?;
    let ip = serde_json::from_str::<Value>(&out).ok().and_then(|r| {
        r.get("ips")?.as_array()?.iter().find_map(|i| {
            i.get("address")?
                .as_str()?
                .split('/')
                .next()?
                .parse::<std::net::Ipv4Addr>()
                .ok()
        })
    });
    ip.ok_or_else(|| {
        let _ = delegate(plugin, "DEL", config);
        CniError::new(
            code::FAILED,
            format!("IPAM plugin {} gave no IPv4 address", plugin.display()),
        )
        .details(out.trim().to_string())
    })
}

/// How long the node may take to answer a call.
const NODE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Send `req` to the node at `control`; its standard output and exit code.
fn ask(control: &std::path::Path, req: &Request) -> Result<(String, u8), String> {
    let stream = std::os::unix::net::UnixStream::connect(control).map_err(|e| e.to_string())?;
    // A node busy with a large change answers late; one that never answers must not hold the
    // runtime's call forever.
    for r in [
        stream.set_read_timeout(Some(NODE_TIMEOUT)),
        stream.set_write_timeout(Some(NODE_TIMEOUT)),
    ] {
        r.map_err(|e| e.to_string())?;
    }
    let mut line = serde_json::to_string(req).expect("requests serialize");
    line.push('\n');
    (&stream)
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut err = String::new();
    for l in std::io::BufReader::new(&stream).lines() {
        let l = l.map_err(|e| match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("the node did not answer within {NODE_TIMEOUT:?}")
            }
            _ => e.to_string(),
        })?;
        match serde_json::from_str::<Reply>(&l) {
            Ok(Reply::Out(s)) => out.push_str(&s),
            Ok(Reply::Err(s)) => {
                err.push_str(&s);
                err.push('\n');
            }
            Ok(Reply::Exit(code)) => {
                if !err.is_empty() && out.is_empty() {
                    out = err;
                }
                return Ok((out, code));
            }
            Err(e) => return Err(format!("bad reply from the node: {e}")),
        }
    }
    Err("the node closed the connection".into())
}
