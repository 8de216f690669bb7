//! The control protocol between the `vxmesh` client commands (and `vxmesh-cni`) and a running
//! node: one JSON request line ([`Request`]), then a stream of JSON reply lines ([`Reply`]), the
//! last of which is the exit code the client exits with ([`EXIT_OK`], [`EXIT_FAILURE`],
//! [`EXIT_USAGE`]). Control plane, off the packet path.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::cni::CniCall;

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: runtime failure.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code: usage or configuration error.
pub const EXIT_USAGE: u8 = 2;

/// A command sent to a running node.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// `network inspect NET`.
    NetworkInspect {
        /// The network.
        network: String,
        /// JSON output.
        json: bool,
    },
    /// `fdb show`.
    FdbShow {
        /// Only this network.
        network: Option<String>,
        /// JSON output.
        json: bool,
    },
    /// `lb show`.
    LbShow {
        /// `--stats`.
        stats: bool,
        /// `--rate`.
        rate: bool,
        /// JSON output.
        json: bool,
    },
    /// `conntrack show`.
    ConntrackShow {
        /// JSON output.
        json: bool,
    },
    /// `stats`.
    Stats {
        /// JSON output.
        json: bool,
    },
    /// `trace`.
    Trace {
        /// Packets to trace.
        count: u32,
        /// Filter expression.
        filter: Option<String>,
        /// JSON output.
        json: bool,
    },
    /// `capture`.
    Capture {
        /// Port name.
        port: String,
        /// Absolute path of the pcap file to write.
        file: PathBuf,
        /// Frames to capture (until the client goes away if none).
        count: Option<u64>,
        /// The ESP port's traffic decrypted (`--decrypted`).
        #[serde(default)]
        decrypted: bool,
        /// Every step of traced packets into a pcapng file (`--stages`; `port` is empty).
        #[serde(default)]
        stages: bool,
        /// With `stages`: which packets (the trace filter language).
        #[serde(default)]
        filter: Option<String>,
    },
    /// `reload`.
    Reload,
    /// CNI ADD from `vxmesh-cni`.
    CniAdd(CniCall),
    /// CNI DEL.
    CniDel(CniCall),
    /// CNI CHECK.
    CniCheck(CniCall),
    /// CNI STATUS.
    CniStatus(CniCall),
    /// CNI GC.
    CniGc(CniCall),
}

/// One reply line.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// Text for standard output.
    Out(String),
    /// Text for standard error.
    Err(String),
    /// The end, with the client's exit code.
    Exit(u8),
}
