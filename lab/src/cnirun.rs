//! Running the CNI plugin as a runtime does (environment, config on standard input, result or
//! error object on standard output), for the namespace tests of `vxmesh-cni`. Not on any packet
//! path.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::Value;

/// The plugin, as a runtime runs it.
pub struct Plugin {
    /// The `vxmesh-cni` binary.
    pub exe: PathBuf,
}

impl Plugin {
    /// Run `CNI_COMMAND=cmd` with `config` on standard input: exit code and output as JSON
    /// (`Null` when empty).
    pub fn call(
        &self,
        cmd: &str,
        netns: &str,
        cid: &str,
        ifname: &str,
        args: &str,
        config: &Value,
    ) -> (i32, Value) {
        let mut child = Command::new(&self.exe)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", cmd)
            .env("CNI_CONTAINERID", cid)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", "/usr/lib/cni")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running vxmesh-cni");
        use std::io::Write;
        // A plugin that does not read its input is not an error of the runtime's.
        let _ = child
            .stdin
            .take()
            .unwrap()
            .write_all(config.to_string().as_bytes());
        let o = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&o.stdout);
        let v = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{cmd}: output {text:?}: {e}"))
        };
        (o.status.code().unwrap_or(-1), v)
    }

    /// [`Plugin::call`] on `eth0`.
    pub fn call_eth0(
        &self,
        cmd: &str,
        netns: &str,
        cid: &str,
        args: &str,
        config: &Value,
    ) -> (i32, Value) {
        self.call(cmd, netns, cid, "eth0", args, config)
    }

    /// A call that must succeed (on `eth0`); its output.
    pub fn ok(&self, cmd: &str, netns: &str, cid: &str, args: &str, config: &Value) -> Value {
        let (code, v) = self.call_eth0(cmd, netns, cid, args, config);
        assert_eq!(code, 0, "{cmd} {cid}: {v}");
        v
    }

    /// A call that must fail with CNI error `code`; its message.
    pub fn fails(
        &self,
        cmd: &str,
        netns: &str,
        cid: &str,
        ifname: &str,
        config: &Value,
        code: u64,
    ) -> String {
        let (exit, v) = self.call(cmd, netns, cid, ifname, "", config);
        assert_ne!(exit, 0, "{cmd} {cid} should fail: {v}");
        assert_eq!(v["code"].as_u64(), Some(code), "{cmd} {cid}: {v}");
        assert!(v["msg"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
        v["msg"].as_str().unwrap().to_string()
    }
}
